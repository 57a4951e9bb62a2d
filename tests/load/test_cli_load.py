"""`wattlm load` from the command line: one line and exit 2 for bad input, before any load; SIGINT
keeps what was measured."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.fakes.openai_server import FakeOpenAI

WATTLM = [sys.executable, "-m", "wattlm"]


def run(*args, **kw):
    return subprocess.run([*WATTLM, *args], capture_output=True, text=True, timeout=120, **kw)


@pytest.fixture(scope="module")
def server():
    with FakeOpenAI(itl_s=0.002) as s:
        yield s


@pytest.fixture
def text(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("to be or not to be that is the question " * 50)
    return f


@pytest.mark.parametrize(
    "args, message",
    [
        (["--rate", "0"], "--rate '0': every level must be numbers > 0"),
        (["--rate", "1", "--concurrency", "2"], "not both"),
        (["--concurrency", "1", "--slo", "ttft"], "--slo 'ttft': give KEY=SECONDS pairs"),
        (["--concurrency", "1", "--model", "other"], "--model 'other' is not served"),
        (["--concurrency", "1", "--output-len", "0"], "--output-len '0': counts are ≥ 1"),
        (["--concurrency", "1", "--duration", "-1"], "--duration must be > 0"),
        (["--concurrency", "1", "--prompts", "EMPTY"], "holds no prompt"),
        (["--concurrency", "1", "--api", "embeddings"], "--api 'embeddings': use one of chat, completions"),
        (["--concurrency", "1", "--turns", "0"], "--turns must be a whole number 1-1000, got 0"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_any_load(server, text, tmp_path, args, message):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    args = [str(empty) if a == "EMPTY" else a for a in args]
    sent = len(server.bodies)
    source = [] if "--prompts" in args else ["--text", str(text)]
    r = run("load", "--url", server.url, *source, "--out", str(tmp_path / "run"), *args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert len(server.bodies) == sent and not (tmp_path / "run").exists()


def test_unreachable_and_not_openai(tmp_path, text):
    with FakeOpenAI() as s:
        port = s.port
    r = run("load", "--url", f"http://127.0.0.1:{port}/v1", "--concurrency", "1", "--text", str(text))
    assert r.returncode == 2 and "cannot reach" in r.stderr and r.stderr.count("\n") == 1
    with FakeOpenAI() as s:
        r = run("load", "--url", f"http://127.0.0.1:{s.port}/api", "--concurrency", "1", "--text", str(text))
    assert r.returncode == 2 and "without an OpenAI model list" in r.stderr


@pytest.mark.slow
def test_run_prints_table_and_json(server, text, tmp_path):
    args = ["load", "--url", server.url, "--concurrency", "2", "--duration", "1", "--warmup", "0.2"]
    r = run(*args, "--text", str(text), "--output-len", "4", "--out", str(tmp_path / "run"), "--json")
    assert r.returncode == 0, r.stderr
    records = json.loads(r.stdout)
    assert records[0]["level"] == "concurrency=2" and records[0]["status"] == "ok"
    assert records[0]["generator"]["cpu_s"] > 0 and records[0]["j_per_output_token"] > 0
    r = run("load", "--resume", str(tmp_path / "run"), "--concurrency", "3")
    assert r.returncode == 2 and "leave out --concurrency" in r.stderr


@pytest.mark.slow
def test_sigint_keeps_finished_and_partial_levels(server, text, tmp_path):
    out = tmp_path / "run"
    args = ["load", "--url", server.url, "--concurrency", "1,2", "--duration", "1.5", "--warmup", "0.2"]
    p = subprocess.Popen([*WATTLM, *args, "--text", str(text), "--out", str(out)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the first level is recorded, the second is running
        results = out / "results.jsonl"
        if results.exists() and results.read_text().count("\n") >= 1:
            break
        time.sleep(0.05)
    time.sleep(0.8)
    p.send_signal(signal.SIGINT)
    _, stderr = p.communicate(timeout=60)
    assert p.returncode == 130, stderr
    levels = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert [x["level"] for x in levels] == ["concurrency=1", "concurrency=2"]
    assert levels[0]["status"] == "ok" and levels[1]["status"] == "partial"
    assert "interrupted" in levels[1]["reason"] and "--resume" in stderr
    assert json.loads((out / "run.json").read_text())["kind"] == "load"
    env = {**os.environ}
    r = run("load", "--resume", str(out), "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert [x["status"] for x in json.loads(r.stdout)] == ["ok", "ok"]


def test_an_exporter_that_does_not_answer_stops_the_run_before_any_load(server, text, tmp_path):
    from tests.load.servers import free_port

    sent = len(server.bodies)
    args = ["load", "--url", server.url, "--concurrency", "1", "--text", str(text), "--out", str(tmp_path / "run")]
    r = run(*args, "--energy-from", f"127.0.0.1:{free_port()}")
    assert r.returncode == 2 and "energy exporter http://127.0.0.1:" in r.stderr and "did not answer" in r.stderr
    assert r.stderr.count("\n") == 1 and len(server.bodies) == sent and not (tmp_path / "run").exists()
