"""Shared by the sweep scripts: one in-process `wattlm bench` run of the default model on WikiText-2
test (calibration on WikiText-2 valid), kept in a run folder that a second invocation resumes."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "wikitext-2"


def run_wikitext(
    variants: str, *, windows: int, calib_samples: int, min_phase_s: float, run: Path
) -> tuple[Any, dict[str, Any], float, bool]:
    """(bench result, run.json, wall seconds of this invocation, resumed?) for `variants` on CPU."""
    from wattlm.bench.config import BenchConfig
    from wattlm.bench.harness import run_bench
    from wattlm.models.assets import DEFAULT_MODEL, fetch

    fetch(DEFAULT_MODEL)
    config = BenchConfig(
        text=str(DATA / "wiki.test.tokens"),
        calib_text=str(DATA / "wiki.valid.tokens"),
        calib_samples=calib_samples,
        variants=variants,
        max_tokens=512 * windows,
        min_phase_s=min_phase_s,
        device="cpu",
        offline=True,
    )

    def progress(task: str, done: int, total: int) -> None:
        if done == total:
            print(f"{time.strftime('%H:%M:%S')} {task} {done}/{total}", file=sys.stderr, flush=True)

    start = time.perf_counter()
    resume = (
        run if (run / "run.json").exists() else None
    )  # a crash (e.g. a peer failing mid-run) is resumed, not redone
    result = run_bench(config, out=None if resume else run, resume=resume, progress=progress)
    return result, json.loads((run / "run.json").read_text()), time.perf_counter() - start, resume is not None
