"""A check of the GPU meter on real hardware that fits a short loan (under 5 minutes on one H100/H200).

    python bench/gpu_check.py [--out bench/results/gpu_check.json] [--seconds 20]

Writes JSON with, for GPU 0:
- how the meter measures it (counter or polled power, and why), and the counter's measured update period;
- idle power (instant power polled for 5 s);
- energy by the counter vs by polling instant power over the same window of bf16 matmuls (agreement in %);
- a kernel launched just before a window ends: its energy inside the window with the meter's
  synchronisation, and what a read without synchronisation would have missed;
- a short `wattlm bench --device cuda` and `wattlm train --precision bf16 --steps 4` on a tiny model
  built from a config (the machine needs no network), with their exit codes and energy provenance.

Without a CUDA GPU it writes {"status": "skipped", ...} and exits 0.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _nvml_gpu0() -> tuple[Any, Any]:
    import pynvml

    pynvml.nvmlInit()
    return pynvml, pynvml.nvmlDeviceGetHandleByIndex(0)


def _instant_w(nvml: Any, handle: Any) -> float:
    field = getattr(nvml, "NVML_FI_DEV_POWER_INSTANT", None)
    if field is not None:
        (value,) = nvml.nvmlDeviceGetFieldValues(handle, [field])
        if value.nvmlReturn == 0:
            return value.value.uiVal / 1000.0
    return nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0


def _matmuls(torch: Any, seconds: float) -> int:
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    n, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(8):
            a = (a @ b).clamp_(-1, 1)
        torch.cuda.synchronize()
        n += 8
    return n


def counter_update_period(nvml: Any, handle: Any, torch: Any, seconds: float = 2.0) -> float | None:
    """Median time between changes of the energy counter while the GPU is busy."""
    changes, last = [], nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    stop = threading.Event()
    worker = threading.Thread(target=lambda: (_matmuls(torch, seconds + 0.5), stop.set()))
    worker.start()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        value = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        if value != last:
            changes.append(time.monotonic())
            last = value
    worker.join()
    gaps = [b - a for a, b in zip(changes, changes[1:])]
    return statistics.median(gaps) if gaps else None


def idle_power(nvml: Any, handle: Any, seconds: float = 5.0) -> float:
    samples, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        samples.append(_instant_w(nvml, handle))
        time.sleep(0.01)
    return statistics.mean(samples)


def counter_vs_polling(nvml: Any, handle: Any, torch: Any, seconds: float) -> dict[str, Any]:
    """The same window measured by wattlm's meter and by integrating instant power at 100 Hz."""
    from wattlm.energy.discover import discover
    from wattlm.energy.meter import EnergyMeter

    polled = {"j": 0.0, "last": None}
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            now, p = time.monotonic(), _instant_w(nvml, handle)
            if polled["last"] is not None:
                t0, p0 = polled["last"]
                polled["j"] += 0.5 * (p + p0) * (now - t0)
            polled["last"] = (now, p)
            time.sleep(0.01)

    sources = [s for s in discover().sources if s.name == "nvml"]
    with EnergyMeter(sources) as meter:
        poller = threading.Thread(target=poll)
        poller.start()
        meter.begin_window("matmuls")
        steps = _matmuls(torch, seconds)
        m = meter.end_window("matmuls")
        stop.set()
        poller.join()
    gpu = next(d for d in m.devices if d.domain == "gpu")
    return {
        "seconds": m.duration_s,
        "matmuls": steps,
        "meter_j": gpu.energy_j,
        "meter_provenance": gpu.provenance,
        "meter_note": gpu.note,
        "instant_polling_j": polled["j"],
        "agreement_pct": 100.0 * (gpu.energy_j - polled["j"]) / polled["j"] if polled["j"] else None,
        "status": m.status,
    }


def kernel_at_the_edge(nvml: Any, handle: Any, torch: Any) -> dict[str, Any]:
    """A ~1 s batch of kernels queued just before a window ends: counted with synchronisation, and
    how much a window ending without it would miss."""
    from wattlm.energy.discover import discover
    from wattlm.energy.meter import EnergyMeter

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    torch.cuda.synchronize()
    t0 = time.monotonic()
    for _ in range(64):
        a = (a @ a).clamp_(-1, 1)
    torch.cuda.synchronize()
    batch_s = time.monotonic() - t0
    sources = [s for s in discover().sources if s.name == "nvml"]
    with EnergyMeter(sources) as meter:
        meter.begin_window("synced")
        for _ in range(64):
            a = (a @ a).clamp_(-1, 1)
        synced = meter.end_window("synced")  # the meter synchronises before it reads
    e0 = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    start = time.monotonic()
    for _ in range(64):
        a = (a @ a).clamp_(-1, 1)
    e1 = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)  # no synchronisation: the work is still queued
    unsynced_s = time.monotonic() - start
    torch.cuda.synchronize()
    return {
        "batch_s": batch_s,
        "synced_window_s": synced.duration_s,
        "synced_window_j": synced.it_energy_j,
        "unsynced_window_s": unsynced_s,
        "unsynced_window_j": (e1 - e0) / 1000.0,
    }


def wattlm_runs(folder: Path) -> dict[str, Any]:
    """A short bench and a short training run on CUDA with a tiny model built from a config."""
    sys.path.insert(0, str(ROOT))
    from tests.tiny import save_inputs

    inputs = save_inputs(folder / "inputs", "All the world's a stage, and all the men and women merely players. " * 200)
    common = ["--model", str(inputs / "model"), "--text", str(inputs / "text.txt"), "--device", "cuda"]
    runs = {
        "bench": [*common, "--variants", "fp32,bf16", "--seq-len", "64", "--max-tokens", "512", "--min-phase-s", "1",
                  "--repeats", "1", "--prompt-len", "16", "--new-tokens", "8", "--out", str(folder / "bench")],
        "train": [*common, "--precision", "bf16", "--steps", "4", "--batch-size", "2", "--seq-len", "64",
                  "--eval-windows", "1", "--out", str(folder / "train")],
    }  # fmt: skip
    out = {}
    for name, args in runs.items():
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "wattlm", name, *args], capture_output=True, text=True, timeout=240)
        out[name] = {"exit": r.returncode, "seconds": time.monotonic() - t0, "stderr_tail": r.stderr[-1500:]}
        results = folder / name / "results.jsonl"
        if results.exists():
            records = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
            out[name]["provenance"] = sorted({str(r.get("provenance")) for r in records if r.get("provenance")})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu_check.json")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the counter-vs-polling window")
    args = parser.parse_args()
    result: dict[str, Any] = {"schema": "wattlm.gpu-check/1"}
    try:
        import torch
    except ImportError:
        torch = None
    if torch is None or not torch.cuda.is_available():
        result.update(status="skipped", reason="no CUDA GPU is usable here")
    else:
        from wattlm.energy.discover import discover
        from wattlm.environment import environment

        nvml, handle = _nvml_gpu0()
        result["environment"] = environment(torch.device("cuda", 0))
        result["probes"] = [p.__dict__ for p in discover().probes]
        result["counter_update_period_s"] = counter_update_period(nvml, handle, torch)
        result["idle_power_w"] = idle_power(nvml, handle)
        result["counter_vs_polling"] = counter_vs_polling(nvml, handle, torch, args.seconds)
        result["kernel_at_the_edge"] = kernel_at_the_edge(nvml, handle, torch)
        with tempfile.TemporaryDirectory(prefix="wattlm-gpu-check-") as folder:
            result["wattlm"] = wattlm_runs(Path(folder))
        result["status"] = "ok"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("environment", "probes")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
