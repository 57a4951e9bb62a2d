"""Energy sources: one module per vendor, each behind the interface in base.py."""

from .base import Channel, EnergySource, NullSource, Probe, Reading

__all__ = ["Channel", "EnergySource", "NullSource", "Probe", "Reading"]
