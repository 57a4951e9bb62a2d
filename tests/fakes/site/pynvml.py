"""A stand-in `pynvml` for subprocess tests: put this folder on PYTHONPATH.

GPUs whose energy counters advance with real time at FAKE_NVML_WATTS each (default 250 W), or, with
FAKE_NVML_NO_COUNTER=1, only a power reading of that many watts. FAKE_NVML_UUIDS (comma-separated)
names the GPUs; by default there is one.
"""

import os
import time

from tests.fakes.nvml import FakeGpu, make_fake_nvml

_WATTS = float(os.environ.get("FAKE_NVML_WATTS", "250"))
_T0 = time.monotonic()
_counter = None if os.environ.get("FAKE_NVML_NO_COUNTER") else (lambda: (time.monotonic() - _T0) * _WATTS * 1000.0)
_UUIDS = os.environ.get("FAKE_NVML_UUIDS", "GPU-fake0000-0000-0000-0000-000000000000").split(",")
_module = make_fake_nvml(
    [FakeGpu(u, name="Fake H100", energy_mj=_counter, power_mw=lambda: _WATTS * 1000.0) for u in _UUIDS]
)
globals().update({k: v for k, v in vars(_module).items() if not k.startswith("__")})
