"""A stand-in `pynvml` for subprocess tests: put this folder on PYTHONPATH.

GPUs whose energy counters advance with real time at FAKE_NVML_WATTS each (default 250 W), or, with
FAKE_NVML_NO_COUNTER=1, only a power reading of that many watts. FAKE_NVML_UUIDS (comma-separated)
names the GPUs; by default there is one. With FAKE_NVML_STATE=FILE the power limits and locked clocks
live in that JSON file, so a change made by one process is what the next one reads (a GPU keeps its
settings when the process that set them dies).
"""

import json
import os
import time

from tests.fakes.nvml import FakeGpu, make_fake_nvml

_WATTS = float(os.environ.get("FAKE_NVML_WATTS", "250"))
_T0 = time.monotonic()
_counter = None if os.environ.get("FAKE_NVML_NO_COUNTER") else (lambda: (time.monotonic() - _T0) * _WATTS * 1000.0)
_UUIDS = os.environ.get("FAKE_NVML_UUIDS", "GPU-fake0000-0000-0000-0000-000000000000").split(",")
_GPUS = [FakeGpu(u, name="Fake H100", energy_mj=_counter, power_mw=lambda: _WATTS * 1000.0) for u in _UUIDS]
_STATE = os.environ.get("FAKE_NVML_STATE")


def _save() -> None:
    if _STATE:
        data = {g.uuid: {"power_limit_mw": g.power_limit_mw, "locked_clocks": g.locked_clocks} for g in _GPUS}
        with open(_STATE, "w") as f:
            json.dump(data, f)


if _STATE and os.path.exists(_STATE):
    with open(_STATE) as f:
        _saved = json.load(f)
    for _gpu in _GPUS:
        if _gpu.uuid in _saved:
            _gpu.power_limit_mw = _saved[_gpu.uuid]["power_limit_mw"]
            _gpu.locked_clocks = _saved[_gpu.uuid]["locked_clocks"]
_GPUS[0].settings_refused = bool(os.environ.get("FAKE_NVML_REFUSE"))
_module = make_fake_nvml(_GPUS, on_change=_save)
globals().update({k: v for k, v in vars(_module).items() if not k.startswith("__")})
