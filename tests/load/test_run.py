"""wattlm load against the test server: levels, energy accounting, truncation, failures, a dying
server, resume. Energy comes from a source that draws a constant 100 W, so every figure can be checked."""

from __future__ import annotations

import json
import threading

import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.sources import WATTS, ConstantPower
from wattlm.energy.meter import EnergyMeter
from wattlm.errors import ConfigError, InvalidInputError
from wattlm.load.config import Lengths, LoadConfig
from wattlm.load.runner import run_load
from wattlm.results import RunDir


@pytest.fixture
def text(tmp_path):
    f = tmp_path / "text.txt"
    f.write_text(" ".join(f"word{i}" for i in range(2000)))
    return f


def _config(url, text, **kw):
    base = dict(
        url=url, concurrencies=(1, 3), duration_s=1.0, warmup_s=0.3, text=text, output_len=Lengths(8, 8), timeout_s=10
    )
    return LoadConfig(**(base | kw))


def _run(config, out, **kw):
    meter = EnergyMeter([ConstantPower()], interval_s=0.05)
    try:
        return run_load(config, out, meter=meter, **kw)
    finally:
        meter.close()


def test_levels_meter_their_windows_and_count_tokens_by_arrival(tmp_path, text):
    with FakeOpenAI(ttft_s=0.03, itl_s=0.01) as server:
        result = _run(_config(server.url, text, slo={"ttft": 0.5}), tmp_path / "run")
        bodies = list(server.bodies)
    one, three = result.levels
    assert [one["level"], three["level"]] == ["concurrency=1", "concurrency=3"]
    for r in (one, three):
        assert r["status"] == "ok", r["reason"]
        assert (
            r["requests_failed"] == 0
            and r["requests_truncated"] == 0
            and r["tokens_source"] == {"usage": r["requests_completed"]}
        )
        assert r["energy_j"] == pytest.approx(WATTS * r["duration_s"], rel=0.05)
        assert r["provenance"] == "counter" and r["generator"]["energy_j"] == 0.0  # counters: not separable
        assert r["j_per_output_token"] == pytest.approx(r["server_energy_j"] / r["window_output_tokens"])
        assert r["ttft_s"]["p50"] >= 0.03 and r["tpot_s"]["p50"] == pytest.approx(0.01, abs=0.008)
        assert r["goodput_per_s"] == pytest.approx(r["request_throughput_per_s"])
    # three clients: about three times the throughput at the same per-token cost of a fixed 100 W
    assert three["output_tokens_per_s"] > 2 * one["output_tokens_per_s"]
    assert three["j_per_output_token"] < one["j_per_output_token"] / 2
    pinned = bodies[-1]
    assert pinned["ignore_eos"] is True and pinned["min_tokens"] == 8 and pinned["stream_options"]["include_usage"]
    info = RunDir.open(tmp_path / "run", "load").info
    assert info["server"]["version"] == {"/version:version": "fake-1.0"}
    assert info["server"]["length_pinned_by"] == ["max_tokens", "ignore_eos", "min_tokens"]
    assert len(info["prompts"]["sha256"]) == 64 and info["environment"]["cpu"]


def test_rate_levels_follow_the_schedule(tmp_path, text):
    with FakeOpenAI(itl_s=0.002) as server:
        result = _run(_config(server.url, text, concurrencies=(), rates=(20.0,), duration_s=1.5), tmp_path / "r")
    level = result.levels[0]
    assert level["status"] == "ok" and 15 <= level["requests_sent"] <= 50
    assert level["schedule_lag_s"]["p99"] < 0.05


def test_truncated_and_failed_requests_are_counted_not_averaged(tmp_path, text):
    with FakeOpenAI(cut_after=3, fail_every=4) as server:
        level = _run(_config(server.url, text, concurrencies=(2,)), tmp_path / "t").levels[0]
    assert level["requests_truncated"] == level["requests_completed"] > 0
    assert level["failures"]["HTTP 500"] == level["requests_failed"] > 0
    assert level["goodput_per_s"] == 0 and level["j_per_good_request"] is None
    assert level["ttft_s"]["p50"] is None  # truncated requests stay out of the latency figures
    assert level["truncated_tokens_mean"] == 3 and level["output_tokens_min"] == level["output_tokens_max"] == 3


def test_strict_server_and_no_usage(tmp_path, text):
    with FakeOpenAI(strict=True, report_usage=False) as server:
        result = _run(_config(server.url, text, concurrencies=(1,)), tmp_path / "s")
        assert all("ignore_eos" not in b for b in server.bodies[1:])
    level = result.levels[0]
    assert level["tokens_source"] == {"stream": level["requests_completed"]}
    assert RunDir.open(tmp_path / "s").info["server"]["length_pinned_by"] == ["max_tokens"]


def test_a_server_that_dies_leaves_a_partial_level_and_ends_the_run(tmp_path, text):
    server = FakeOpenAI(itl_s=0.01).start()
    threading.Timer(0.8, server.stop).start()
    result = _run(_config(server.url, text, concurrencies=(2, 4), duration_s=3.0), tmp_path / "d")
    assert len(result.levels) == 1 and "stopped answering" in result.stopped
    level = result.levels[0]
    assert level["status"] == "partial" and "stopped answering" in level["reason"]
    assert level["requests_failed"] > 0 and level["requests_completed"] > 0
    lines = (tmp_path / "d" / "results.jsonl").read_text().splitlines()
    assert [json.loads(x)["level"] for x in lines] == ["concurrency=2"]


def test_resume_keeps_ok_levels_and_runs_the_rest(tmp_path, text):
    with FakeOpenAI() as server:
        first = _run(_config(server.url, text, concurrencies=(1,)), tmp_path / "run")
        before = (tmp_path / "run" / "results.jsonl").read_bytes()
        again = _run(None, None, resume=tmp_path / "run")
        assert again.levels == [] and (tmp_path / "run" / "results.jsonl").read_bytes() == before
    assert first.levels[0]["status"] == "ok"
    with FakeOpenAI(model="another-model") as server:
        info = json.loads((tmp_path / "run" / "run.json").read_text())
        info["config"]["url"] = server.url
        (tmp_path / "run" / "run.json").write_text(json.dumps(info))
        with pytest.raises(InvalidInputError, match="now serves 'another-model'"):
            _run(None, None, resume=tmp_path / "run")
    with FakeOpenAI() as server, pytest.raises(ConfigError, match="already exists"):
        _run(_config(server.url, text), tmp_path / "run")


def test_bad_server_input_fails_before_any_load(tmp_path, text):
    with FakeOpenAI() as server:
        with pytest.raises(ConfigError, match="'nope' is not served"):
            _run(_config(server.url, text, model="nope"), tmp_path / "m")
        with pytest.raises(InvalidInputError, match="without an OpenAI model list"):
            _run(_config(server.url.removesuffix("/v1"), text), tmp_path / "u")
        assert server.bodies == []
    with pytest.raises(InvalidInputError, match="cannot reach"):
        _run(_config(server.url, text), tmp_path / "x")
    assert not any((tmp_path / d).exists() for d in ("m", "u", "x"))


def test_without_streaming_tokens_come_from_usage_and_latency_is_end_to_end(tmp_path, text):
    with FakeOpenAI(ttft_s=0.02, itl_s=0.002) as server:
        level = _run(_config(server.url, text, concurrencies=(2,), stream=False), tmp_path / "n").levels[0]
        assert all(b["stream"] is False for b in server.bodies)
    assert level["status"] == "ok" and level["tokens_source"] == {"usage": level["requests_completed"]}
    assert level["ttft_s"]["p50"] is None and level["tpot_s"]["p50"] is None
    assert level["e2e_s"]["p50"] >= 0.02 + 7 * 0.002 and level["window_output_tokens"] > 0
