"""A second real server: `transformers serve` on a tiny local model, offline, with the completions API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.load.servers import bounded, free_port, wait_until_serving
from tests.tiny import save_tiny

pytestmark = pytest.mark.slow
WATTLM = [sys.executable, "-m", "wattlm"]


@pytest.fixture
def transformers_server(tmp_path):
    pytest.importorskip("fastapi", reason="transformers serve needs its serving extra (fastapi, uvicorn)")
    pytest.importorskip("uvicorn", reason="transformers serve needs its serving extra (fastapi, uvicorn)")
    cli = Path(sys.executable).parent / "transformers"
    if not cli.exists() and shutil.which("transformers") is None:
        pytest.skip("no transformers command line")
    model = save_tiny(tmp_path / "tiny")
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    log = tmp_path / "server.log"
    out = open(log, "w")  # noqa: SIM115 (closed after the server stops)
    proc = subprocess.Popen(
        bounded(
            [str(cli if cli.exists() else "transformers"), "serve", str(model), "--host", "127.0.0.1"]
            + ["--port", str(port), "--device", "cpu"],
            600,
        ),
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/v1"
    why = wait_until_serving(url + "/models", proc, 180.0, log)
    if why is not None:
        proc.kill()
        pytest.skip(f"transformers serve did not start: {why}")
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    out.close()


def test_transformers_serve(transformers_server, tmp_path):
    r = subprocess.run(
        [*WATTLM, "load", "--url", transformers_server, "--api", "completions", "--concurrency", "1,2"]
        + ["--requests", "3", "--warmup", "0.5", "--input-len", "16", "--output-len", "8"]
        + ["--out", str(tmp_path / "run"), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    for level in json.loads(r.stdout):
        assert level["status"] == "ok", level["reason"]
        assert level["requests_completed"] == 3 and level["requests_failed"] == 0
        assert level["window_output_tokens"] > 0 and level["j_per_output_token"] > 0
        assert level["tokens_source"] == {"usage": 3}  # it streams usage
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["server"]["model"] == str(tmp_path / "tiny")
    assert info["server"]["length_pinned_by"] == ["max_tokens"]  # it refuses ignore_eos with HTTP 422
