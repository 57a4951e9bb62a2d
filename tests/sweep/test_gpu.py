"""GPU knobs of a sweep on a fake NVML whose power and speed follow the power limit: applied before
each configuration, restored after it, after Ctrl-C, and — through the restore record — after a
crash; refused in one line without the permission or outside the device's range."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.fakes.nvml import FakeGpu, make_fake_nvml
from tests.sweep.helpers import load, running
from wattlm.errors import ConfigError
from wattlm.results import RunDir
from wattlm.sweep import SweepConfig, run_sweep
from wattlm.sweep.gpu import record_path

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
DRAW_W = 400.0  # what the fake GPU draws under load, when the limit allows it
UUID = "GPU-fake0000-0000-0000-0000-000000000000"


class CappedCounter:
    """The fake GPU's energy counter (mJ): it draws DRAW_W, or its power limit if that is lower."""

    def __init__(self) -> None:
        self.gpu: FakeGpu | None = None
        self.t, self.mj = time.monotonic(), 5_000_000.0

    def __call__(self) -> float:
        now = time.monotonic()
        assert self.gpu is not None
        self.mj += (now - self.t) * min(DRAW_W, self.gpu.power_limit_mw / 1000) * 1000
        self.t = now
        return self.mj


def fake_gpu(monkeypatch, state: Path, refused: bool = False) -> FakeGpu:
    """One fake H100 in this process; its limit also kept in `state` for the fake server to read."""
    counter = CappedCounter()
    gpu = FakeGpu(UUID, energy_mj=counter, power_mw=lambda: DRAW_W * 1000, settings_refused=refused)
    counter.gpu = gpu

    def persist() -> None:
        state.write_text(json.dumps({UUID: {"power_limit_mw": gpu.power_limit_mw, "locked_clocks": gpu.locked_clocks}}))

    persist()
    monkeypatch.setitem(sys.modules, "pynvml", make_fake_nvml([gpu], on_change=persist))
    return gpu


def test_power_limits_are_applied_per_configuration_and_restored(monkeypatch, tmp_path, text):
    state = tmp_path / "gpu.json"
    gpu = fake_gpu(monkeypatch, state)
    marker = f"sweep-{uuid.uuid4().hex}"
    sweep = SweepConfig(
        server=f"{PY} -m tests.fakes.gpu_server {{port}} {state} {marker}",
        grid={"gpu_power_limit_w": ("250", "700"), "gpu_clock_mhz": ("1500",)},
        default={"gpu_power_limit_w": "700", "gpu_clock_mhz": "1500"},
        load=load(text, concurrencies=(1,), requests=4, output_len=__import__("wattlm").load.config.Lengths(10, 10)),
    )
    run_sweep(sweep, tmp_path / "run")
    assert gpu.power_limit_mw == 700_000 and gpu.locked_clocks is None and not record_path().exists()
    assert running(marker) == []
    lines = {line["config_id"]: line for line in RunDir.open(tmp_path / "run", "sweep").records()}
    capped, full = (
        lines["gpu_power_limit_w=250,gpu_clock_mhz=1500"],
        lines["default(gpu_power_limit_w=700,gpu_clock_mhz=1500)"],
    )
    assert capped["status"] == full["status"] == "ok"
    # the meter read the fake GPU: 150 W less under the 250 W cap; tokens come 700/250 times slower
    assert full["avg_power_w"] - capped["avg_power_w"] == pytest.approx(DRAW_W - 250, rel=0.1)
    assert full["output_tokens_per_s"] / capped["output_tokens_per_s"] == pytest.approx(700 / 250, rel=0.25)
    assert (
        "GPU knobs: {'gpu_power_limit_w': 250.0, 'gpu_clock_mhz': 1500.0"
        in (tmp_path / "run" / capped["log"]).read_text()
    )


def test_ctrl_c_inside_a_configuration_restores_the_gpu_and_stops_the_server(monkeypatch, tmp_path, text):
    state = tmp_path / "gpu.json"
    gpu = fake_gpu(monkeypatch, state)
    marker = f"sweep-{uuid.uuid4().hex}"
    seen = {}

    def interrupted(*args, **kwargs):
        seen["limit"] = gpu.power_limit_mw
        seen["record"] = json.loads(record_path().read_text())
        seen["server"] = len(running(marker))
        raise KeyboardInterrupt

    monkeypatch.setattr("wattlm.load.runner.run_load", interrupted)
    sweep = SweepConfig(
        server=f"{PY} -m tests.fakes.gpu_server {{port}} {state} {marker}",
        grid={"gpu_power_limit_w": ("300",)},
        load=load(text),
    )
    result = run_sweep(sweep, tmp_path / "run")
    assert result.interrupted and seen["limit"] == 300_000 and seen["server"] >= 1
    assert seen["record"]["devices"] == [{"index": 0, "uuid": UUID, "power_limit_mw": 700_000}]
    assert gpu.power_limit_mw == 700_000 and not record_path().exists() and running(marker) == []


def test_a_crashed_sweep_leaves_a_record_the_next_one_applies(tmp_path, text):
    state = tmp_path / "gpu.json"
    marker = f"sweep-{uuid.uuid4().hex}"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "fakes" / "site"), str(ROOT)]),
        "FAKE_NVML_STATE": str(state),
        "WATTLM_STATE_DIR": str(tmp_path / "state"),
    }
    args = [PY, "-m", "wattlm", "sweep", "--server", f"{PY} -m tests.fakes.gpu_server {{port}} {state} {marker}",
            "--concurrency", "1", "--requests", "400", "--output-len", "32", "--text", str(text)]  # fmt: skip
    sweep = subprocess.Popen(
        [*args, "--grid", "gpu_power_limit_w=300", "--out", str(tmp_path / "crashed")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    record = tmp_path / "state" / "gpu-restore.json"
    try:
        deadline = time.monotonic() + 60
        while not (record.exists() and running(marker)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert record.exists(), "the sweep never applied the limit"
        time.sleep(1.0)
        sweep.send_signal(signal.SIGKILL)  # no finally block runs: the GPU stays capped
        sweep.wait(10)
    finally:
        for p in running(marker):  # the server of a killed sweep outlives it; a test must not
            p.kill()
    assert json.loads(state.read_text())[UUID]["power_limit_mw"] == 300_000 and record.exists()
    r = subprocess.run(
        [*args, "--requests", "2", "--grid", "gpu_power_limit_w=700", "--out", str(tmp_path / "next")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "restored the GPU settings an interrupted sweep left changed: GPU 0 700 W" in " ".join(r.stderr.split())
    assert json.loads(state.read_text())[UUID]["power_limit_mw"] == 700_000 and not record.exists()
    assert running(marker) == []


def test_gpu_knobs_without_permission_or_out_of_range_are_refused_before_anything_starts(monkeypatch, tmp_path, text):
    fake_gpu(monkeypatch, tmp_path / "gpu.json", refused=True)
    sweep = SweepConfig(
        server=f"{PY} -m tests.fakes.gpu_server {{port}} x", grid={"gpu_power_limit_w": ("300",)}, load=load(text)
    )
    with pytest.raises(ConfigError, match="needs root"):
        run_sweep(sweep, tmp_path / "run")
    fake_gpu(monkeypatch, tmp_path / "gpu.json")
    low = SweepConfig(
        server=f"{PY} -m tests.fakes.gpu_server {{port}} x", grid={"gpu_power_limit_w": ("50",)}, load=load(text)
    )
    with pytest.raises(ConfigError, match="gpu_power_limit_w=50: GPU 0 accepts 200-700 W"):
        run_sweep(low, tmp_path / "run2")
    assert not (tmp_path / "run").exists() and not (tmp_path / "run2").exists()


def test_only_the_gpus_visible_to_the_process_are_changed(monkeypatch, tmp_path):
    from wattlm.sweep.gpu import GpuKnobs

    gpus = [FakeGpu(f"GPU-{i}", energy_mj=lambda: 0.0, power_mw=lambda: 1.0) for i in range(3)]
    monkeypatch.setitem(sys.modules, "pynvml", make_fake_nvml(gpus))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-2,1")
    knobs = GpuKnobs()
    try:
        assert knobs.indices == [2, 1]
        knobs.apply(300, None)
        assert [g.power_limit_mw for g in gpus] == [700_000, 300_000, 300_000]
        knobs.restore()
        assert [g.power_limit_mw for g in gpus] == [700_000] * 3
    finally:
        knobs.close()
