"""wattlm serve → its spans → wattlm ledger, and wattlm load's view of the same requests: the ids the
clients saw are the ids in the ledger, with the server's token counts, and the server's `timings`
place each request's prompt reading in wattlm load's requests.jsonl."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from tests.ledger.test_receiver import ledger_lines, start_ledger
from tests.load.servers import free_port
from tests.serve.helpers import tiny_gguf
from tests.serve.test_server import running
from wattlm.jsonlog import read_ledger
from wattlm.results import RunDir

pytest.importorskip("opentelemetry.sdk")
pytestmark = [pytest.mark.slow, pytest.mark.engines]


def test_serve_spans_reach_the_ledger_with_the_clients_ids(tmp_path):
    gguf = tiny_gguf(tmp_path)
    otlp = free_port()
    out = tmp_path / "ledger.jsonl"
    ledger = start_ledger(out, otlp, "--settle-s", "3")
    try:
        with running(gguf, tmp_path, "--otlp-traces-endpoint", f"127.0.0.1:{otlp}") as (url, proc, serve_ledger, _):
            text = tmp_path / "text.txt"
            text.write_text("to be or not to be, that is the question: whether 'tis nobler in the mind\n" * 40)
            r = subprocess.run(
                [sys.executable, "-m", "wattlm", "load", "--url", url + "/v1", "--concurrency", "2", "--requests", "8"]
                + ["--warmup", "0", "--input-len", "16:48", "--output-len", "8:24", "--text", str(text)]
                + ["--out", str(tmp_path / "run"), "--json"],
                capture_output=True,
                text=True,
                timeout=180,
            )
            assert r.returncode == 0, r.stderr
            proc.send_signal(signal.SIGTERM)  # a clean stop flushes the spans
            proc.wait(60)
        served = {x["id"]: x for x in read_ledger(serve_ledger)}
        loaded = [x for x in RunDir.open(tmp_path / "run").requests() if x["measured"]]
        assert len(loaded) == 8
        for x in loaded:
            assert x["id"] in served and x["timeline_source"] == "server-timings"
            mine = served[x["id"]]
            assert x["prompt_tokens"] == mine["prompt_tokens"] and x["cached_prompt_tokens"] == mine["cached_tokens"]
            assert x["server_timings"]["prompt_tokens"] == mine["prompt_tokens"] - mine["cached_tokens"]  # read
            # partial: a meter reading it overlaps was lost on a busy machine; its energy is still there
            assert x["energy_status"] in ("ok", "partial") and x["energy_j"] > 0, x
        (level,) = json.loads(r.stdout)
        s = level["request_energy"]["series"]
        assert s["requests_j"] + s["idle_j"] == pytest.approx(s["energy_j"], rel=1e-9)
        import time

        deadline = time.time() + 30
        while time.time() < deadline:
            got = {x["id"]: x for x in ledger_lines(out) if x["kind"] == "request"}
            if all(x["id"] in got for x in loaded):
                break
            time.sleep(0.5)
    finally:
        ledger.send_signal(signal.SIGTERM)
        ledger.wait(30)
    got = {x["id"]: x for x in ledger_lines(out) if x["kind"] == "request"}
    for x in loaded:
        span = got[x["id"]]
        assert span["status"] == "ok" and span["energy_j"] > 0, span
        assert span["prompt_tokens"] == x["prompt_tokens"] and span["output_tokens"] == x["output_tokens"]
        assert span["cached_prompt_tokens"] == x["cached_prompt_tokens"]
        assert span["model"] == "tiny"
