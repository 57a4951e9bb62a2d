"""A stand-in `pynvml` for subprocess tests: put this folder on PYTHONPATH.

One GPU whose energy counter advances with real time at FAKE_NVML_WATTS (default 250 W), or, with
FAKE_NVML_NO_COUNTER=1, only a power reading of that many watts.
"""

import os
import time

from tests.fakes.nvml import FakeGpu, make_fake_nvml

_WATTS = float(os.environ.get("FAKE_NVML_WATTS", "250"))
_T0 = time.monotonic()
_counter = None if os.environ.get("FAKE_NVML_NO_COUNTER") else (lambda: (time.monotonic() - _T0) * _WATTS * 1000.0)
_module = make_fake_nvml(
    [FakeGpu("GPU-fake0000-0000-0000-0000-000000000000", name="Fake H100", energy_mj=_counter, power_mw=lambda: _WATTS * 1000.0)]
)
globals().update({k: v for k, v in vars(_module).items() if not k.startswith("__")})
