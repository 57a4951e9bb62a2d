"""wattlm: measure, then cut, the energy of LLM training and inference.

`import wattlm` stays light (no torch, no vendor library, no thread, no network): the public names
below are loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "EnergyMeter": "wattlm.energy.meter",
    "MeasureWindow": "wattlm.energy.meter",
    "Measurement": "wattlm.energy.measurement",
    "Facility": "wattlm.energy.facility",
    "CoolingModel": "wattlm.energy.facility",
    "discover": "wattlm.energy.discover",
    "WattlmError": "wattlm.errors",
    "compress_": "wattlm.compress.registry",
    "TrainConfig": "wattlm.train.config",
    "run_train": "wattlm.train",
    "WattlmCallback": "wattlm.train.callback",
    "LoadConfig": "wattlm.load.config",
    "run_load": "wattlm.load.runner",
}

if TYPE_CHECKING:
    from .compress.registry import compress_
    from .energy.discover import discover
    from .energy.facility import CoolingModel, Facility
    from .energy.measurement import Measurement
    from .energy.meter import EnergyMeter, MeasureWindow
    from .errors import WattlmError
    from .load.config import LoadConfig
    from .load.runner import run_load
    from .train import TrainConfig, run_train
    from .train.callback import WattlmCallback

_default_meter = None


def default_meter() -> EnergyMeter:
    """The process-wide meter used by `wattlm.measure`, created on first use."""
    global _default_meter
    if _default_meter is None:
        from .energy.meter import EnergyMeter

        _default_meter = EnergyMeter()
    return _default_meter


def measure(name: str, meter: EnergyMeter | None = None, on_result: Any = None) -> MeasureWindow:
    """Measure a block or a function: `with wattlm.measure("prefill") as m: ...` then `m.result`,
    or `@wattlm.measure("step", on_result=print)`."""
    return (meter or default_meter()).window(name, on_result)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'wattlm' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "__version__",
    "default_meter",
    "measure",
    "EnergyMeter",
    "MeasureWindow",
    "Measurement",
    "Facility",
    "CoolingModel",
    "discover",
    "WattlmError",
    "compress_",
    "TrainConfig",
    "run_train",
    "WattlmCallback",
    "LoadConfig",
    "run_load",
]  # the names of _LAZY, spelled out for readers and linters
