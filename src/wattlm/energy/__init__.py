"""MEASURE: energy sources, the meter and its windows, facility overhead, carbon and cost."""

from .facility import CarbonIntensity, CoolingModel, Facility, resolve_carbon
from .measurement import Measurement
from .meter import EnergyMeter, MeasureWindow

__all__ = [
    "CarbonIntensity",
    "CoolingModel",
    "EnergyMeter",
    "Facility",
    "Measurement",
    "MeasureWindow",
    "resolve_carbon",
]
