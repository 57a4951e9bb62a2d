"""`wattlm sweep` end to end on fake servers started from a command template: a 2×2 grid in rotating
rounds, the report's choice and saving, servers that fail to start, hang or die, resume, checks
before anything starts, and never a server left running."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid

import pytest

from tests.sweep.helpers import load, running
from wattlm.errors import InvalidInputError
from wattlm.load.config import Lengths
from wattlm.report import ReportOptions, write_report
from wattlm.results import RunDir
from wattlm.sweep import SweepConfig, run_sweep

PY = sys.executable
WATTLM = [PY, "-m", "wattlm"]


def test_a_2x2_grid_runs_in_rotating_rounds_and_the_report_picks_the_cheapest_within_the_slo(tmp_path, text):
    marker = f"sweep-{uuid.uuid4().hex}"
    sweep = SweepConfig(
        server=f"{PY} -m tests.fakes.openai_server {{port}} {{itl}} {{slots}} {marker}",
        grid={"slots": ("1", "2"), "itl": ("0.004", "0.03")},
        default={"slots": "1", "itl": "0.004"},
        load=load(text),
        slo={"itl_p50": 0.02},
        rounds=2,
        grace_s=5,
    )
    result = run_sweep(sweep, tmp_path / "run")
    assert not result.interrupted and running(marker) == []
    lines = RunDir.open(tmp_path / "run", "sweep").records()
    ids = ["default(slots=1,itl=0.004)", "slots=1,itl=0.03", "slots=2,itl=0.004", "slots=2,itl=0.03"]
    # round 0 in the configurations' order, round 1 rotated by one
    assert [line["config_id"] for line in lines] == ids + ids[1:] + ids[:1]
    assert all(line["status"] == "ok" and line["window"]["kind"] == "steady" for line in lines), lines
    one_slot = next(line for line in lines if line["config_id"].startswith("default"))
    assert one_slot["window"]["most_streaming"] == 1  # the steady window filled to the server's one slot
    slow = [line for line in lines if "itl=0.03" in line["config_id"]]
    assert all(not line["slo_met"] and line["slo_failed"] == ["itl_p50"] for line in slow)
    assert all((tmp_path / "run" / line["load_run"] / "run.json").is_file() for line in lines)
    assert all("[wattlm sweep] server stopped" in (tmp_path / "run" / line["log"]).read_text() for line in lines)

    report = write_report([tmp_path / "run"], ReportOptions(), tmp_path / "run" / "report")
    rec = report["recommendation"]
    assert rec["chosen"] == "slots=2,itl=0.004" and rec["default"] == "default(slots=1,itl=0.004)"
    assert rec["ratio"]["rounds"] == 2 and 0.2 < rec["saving"] < 0.8 and rec["saving_interval"] is not None
    md = (tmp_path / "run" / "report" / "report.md").read_text()
    assert "Chosen: slots=2,itl=0.004" in md and "less energy per request than the default" in md
    assert {"ITL p50 ms", "J/request", "avg W"} <= {c.strip() for c in md.splitlines()[10].split("|")}
    assert (tmp_path / "run" / "report" / "sweep.png").is_file()
    front = report["front"]
    assert "slots=2,itl=0.004 @ concurrency=2" in front


def test_servers_that_fail_hang_or_die_are_recorded_and_the_sweep_goes_on(tmp_path, text):
    marker = f"sweep-{uuid.uuid4().hex}"
    script = tmp_path / "server.py"
    script.write_text(
        textwrap.dedent(
            """
            import signal, sys, threading, time
            port, mode = int(sys.argv[1]), sys.argv[2]
            if mode == "exit":
                print("boom: no such model", flush=True)
                sys.exit(3)
            if mode == "hang":
                signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL stops it
                print("loading forever", flush=True)
                time.sleep(600)
            from tests.fakes.openai_server import FakeOpenAI
            server = FakeOpenAI(port=port, itl_s=0.02)
            server.thread.start()
            if mode == "die":
                threading.Timer(0.8, lambda: (print("segfault", flush=True), __import__("os")._exit(11))).start()
            server.thread.join()
            """
        )
    )
    sweep = SweepConfig(
        server=f"{PY} {script} {{port}} {{mode}} {marker}",
        grid={"mode": ("ok", "exit", "hang", "die")},
        load=load(text, requests=40, output_len=Lengths(8, 8)),
        startup_timeout_s=3,
        grace_s=1,
    )
    run_sweep(sweep, tmp_path / "run")
    assert running(marker) == []
    lines = {line["config_id"]: line for line in RunDir.open(tmp_path / "run", "sweep").records()}
    assert lines["mode=ok"]["status"] == "ok"
    assert lines["mode=exit"]["status"] == "failed" and "exited with code 3" in lines["mode=exit"]["reason"]
    assert "boom: no such model" in lines["mode=exit"]["server_log_tail"]
    assert (
        "did not answer" in lines["mode=hang"]["reason"] and "loading forever" in lines["mode=hang"]["server_log_tail"]
    )
    hang_log = (tmp_path / "run" / lines["mode=hang"]["log"]).read_text()
    assert "killed (SIGKILL after 1 s)" in hang_log
    assert lines["mode=die"]["status"] == "failed" and "the server died" in lines["mode=die"]["reason"]
    assert "segfault" in lines["mode=die"]["server_log_tail"]


def test_an_interrupted_sweep_resumes_where_it_stopped(tmp_path, text):
    marker = f"sweep-{uuid.uuid4().hex}"
    sweep = SweepConfig(
        server=f"{PY} -m tests.fakes.openai_server {{port}} {{itl}} 4 {marker}",
        grid={"itl": ("0.001", "0.002", "0.003")},
        load=load(text),
    )
    seen: list[str] = []

    def stop_after_first(config_id, lines):
        seen.append(config_id)
        raise KeyboardInterrupt

    first = run_sweep(sweep, tmp_path / "run", on_config=stop_after_first)
    assert first.interrupted and seen == ["itl=0.001"] and running(marker) == []
    rest = run_sweep(None, resume=tmp_path / "run")
    assert not rest.interrupted
    ids = [line["config_id"] for line in RunDir.open(tmp_path / "run", "sweep").records()]
    assert ids == ["itl=0.001", "itl=0.002", "itl=0.003"]


def test_a_builtin_servers_knobs_are_its_own_options_checked_before_anything_starts(tmp_path, text):
    sweep = SweepConfig(server="serve", grid={"max_batchez": ("1",)}, load=load(text), model="m.gguf")
    with pytest.raises(InvalidInputError, match="serve has no option --max-batchez"):
        run_sweep(sweep, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "args, words",
    [
        (["--server", "srv -np {slots}", "--grid", "slots=1"], "no {port} placeholder"),
        (["--server", "srv --port {port} -t {threads}", "--grid", "slots=1"], "placeholders no grid fills: {threads}"),
        (["--server", "srv --port {port} -np {slots}", "--grid", "slots="], "empty value"),
        (["--server", "srv --port {port}"], "give at least one --grid"),
        (["--server", "srv --port {port} -np {slots}", "--grid", "slots=1", "--slo", "itl=1"], "METRIC_STAT=SECONDS"),
        (["--server", "llama-server", "--grid", "parallel=1", "--model", "missing.gguf"], "no such file"),
    ],
)
def test_bad_sweep_input_is_one_line_and_starts_nothing(tmp_path, args, words):
    out = tmp_path / "run"
    r = subprocess.run(
        [*WATTLM, "sweep", *args, "--concurrency", "1", "--requests", "2", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert r.returncode == 2 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not out.exists()


def test_cli_sweeps_and_reports(tmp_path, text):
    marker = f"sweep-{uuid.uuid4().hex}"
    out = tmp_path / "run"
    r = subprocess.run(
        [*WATTLM, "sweep", "--server", f"{PY} -m tests.fakes.openai_server {{port}} 0.002 {{slots}} {marker}",
         "--grid", "slots=1,2", "--concurrency", "2", "--requests", "6", "--output-len", "6", "--text", str(text),
         "--out", str(out), "--json"],
        capture_output=True, text=True, timeout=180, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = json.loads(r.stdout)
    assert [line["config_id"] for line in lines] == ["slots=1", "slots=2"] and running(marker) == []
    assert f"wattlm report {out}" in " ".join(r.stderr.split())
    r = subprocess.run([*WATTLM, "report", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "Chosen: slots=2" in " ".join(r.stderr.split()), r.stderr
