"""`wattlm load --window steady`: the window opens when every client streams (or the server's batch is
full) and closes when the first client runs out of work — checked against the requests' own times on a
server with known timing."""

from __future__ import annotations

import asyncio

import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.sources import WATTS, ConstantPower
from wattlm.energy.meter import EnergyMeter
from wattlm.errors import ConfigError
from wattlm.load.client import session
from wattlm.load.config import Lengths, LoadConfig
from wattlm.load.level import Level, LevelPlan
from wattlm.load.probe import probe
from wattlm.load.prompts import Prompt
from wattlm.load.runner import run_load


def level(url, clients, requests, server_batch=None):
    info = probe(url, None, "chat", True)
    prompts = [Prompt(({"role": "user", "content": f"hello {i}"},), 10) for i in range(4)]
    plan = LevelPlan(0, "concurrency", clients, 0.0, 60.0, requests, 10.0, window="steady", server_batch=server_batch)
    edges: list[str] = []

    async def go():
        async with session() as client:
            return await Level(
                plan, info.endpoint, prompts, client, lambda: edges.append("begin"), edges.append, asyncio.Event(), None
            )()

    return asyncio.run(go()), edges


def test_the_window_is_the_time_every_client_streams_until_the_first_runs_out_of_work():
    # each request: 0.2 s to its first token, then 9 more tokens 0.02 s apart (0.38 s); 4 clients, 12 requests
    with FakeOpenAI(ttft_s=0.2, itl_s=0.02) as server:
        run, edges = level(server.url, 4, 12)
    assert edges == ["begin", ""] and run.window == "steady" and not run.stopped
    assert len(run.records) == 12 and all(r.ok and r.measured for r in run.records)
    first_wave = sorted(run.records, key=lambda r: r.sent_s)[:4]
    full = max(r.token_times_s[0] for r in first_wave)  # the last of the four clients gets its first token
    assert full <= run.window_start_s < full + 0.05
    last_sent = max(r.sent_s for r in run.records)
    # the first client without work: the first request to finish after the twelfth was sent
    out_of_work = min(r.end_s for r in run.records if r.end_s > last_sent)
    assert out_of_work <= run.window_end_s < out_of_work + 0.05
    assert run.window_end_s - run.window_start_s == pytest.approx(3 * 0.38 - 0.2, abs=0.12)


def test_a_server_running_fewer_sequences_than_clients_needs_its_batch_named():
    with FakeOpenAI(ttft_s=0.05, itl_s=0.01, slots=2) as server:
        never, _ = level(server.url, 4, 8)
        named, edges = level(server.url, 4, 8, server_batch=2)
    assert "the batch never filled: at most 2 of 4 requests streamed" in never.stopped
    assert never.window_end_s == never.window_start_s and never.most_streaming == 2
    assert not named.stopped and edges == ["begin", ""] and named.window_end_s > named.window_start_s


def test_a_steady_level_records_its_window_and_the_energy_inside_it(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(" ".join(f"word{i}" for i in range(2000)))
    with FakeOpenAI(ttft_s=0.05, itl_s=0.02) as server:
        config = LoadConfig(
            url=server.url, concurrencies=(3,), requests=9, window="steady", text=text, output_len=Lengths(8, 8)
        )
        meter = EnergyMeter([ConstantPower()], interval_s=0.05)
        try:
            result = run_load(config, tmp_path / "run", meter=meter)
        finally:
            meter.close()
    (record,) = result.levels
    assert record["status"] == "ok", record["reason"]
    assert record["window"]["kind"] == "steady" and record["window"]["most_streaming"] == 3
    assert record["energy_j"] == pytest.approx(WATTS * record["window"]["duration_s"], rel=0.1)
    assert record["requests_sent"] == 9 and record["requests_completed"] == 9


@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(rates=(1.0,), requests=8), "give concurrencies and requests"),
        (dict(concurrencies=(4,)), "give concurrencies and requests"),
        (dict(concurrencies=(4,), requests=8, window="moving"), "use one of fixed, steady"),
        (dict(concurrencies=(4,), requests=8, server_batch=2), "it needs window steady"),
    ],
)
def test_steady_window_options_are_checked(kw, words):
    base = {"window": "steady"} if "window" not in kw and "server_batch" not in kw else {}
    with pytest.raises(ConfigError, match=words):
        LoadConfig(url="http://127.0.0.1:1/v1", **(base | kw))


def test_cli_refuses_a_steady_window_without_requests_in_one_line():
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "wattlm", "load", "--url", "http://127.0.0.1:1/v1", "--concurrency", "4", "--window",
         "steady"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "--window steady measures closed-loop clients" in r.stderr and "--requests" in r.stderr
