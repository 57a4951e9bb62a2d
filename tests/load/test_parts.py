"""Arrival schedules, window accounting, percentiles, goodput, configs and prompt files."""

from __future__ import annotations

import json
import statistics

import pytest

from wattlm.errors import ConfigError
from wattlm.load.client import Endpoint, RequestRecord
from wattlm.load.config import Lengths, LoadConfig, parse_levels, parse_slo
from wattlm.load.metrics import energy_figures, meets, percentile, summarize, tokens_in
from wattlm.load.prompts import Prompt, from_file, from_text, sha256
from wattlm.load.schedule import arrival_offsets_s


def _gaps(rate, arrival="poisson", burstiness=1.0, n=20000, seed=1):
    it = arrival_offsets_s(rate, arrival, burstiness, seed)
    times = [next(it) for _ in range(n)]
    return [b - a for a, b in zip([0.0, *times], times)]


def test_poisson_gaps_have_the_rate_mean_and_exponential_spread():
    gaps = _gaps(4.0)
    assert statistics.mean(gaps) == pytest.approx(0.25, rel=0.03)
    assert statistics.stdev(gaps) / statistics.mean(gaps) == pytest.approx(1.0, rel=0.05)  # exponential: CV 1
    assert all(g > 0 for g in gaps)


def test_gamma_burstiness_changes_spread_not_mean():
    bursty, smooth = _gaps(2.0, burstiness=0.25), _gaps(2.0, burstiness=4.0)
    for gaps in (bursty, smooth):
        assert statistics.mean(gaps) == pytest.approx(0.5, rel=0.05)
    # gamma shape k: CV = 1/sqrt(k)
    assert statistics.stdev(bursty) / statistics.mean(bursty) == pytest.approx(2.0, rel=0.08)
    assert statistics.stdev(smooth) / statistics.mean(smooth) == pytest.approx(0.5, rel=0.08)


def test_constant_spacing_and_seeded_schedules():
    assert _gaps(5.0, "constant", n=5) == pytest.approx([0.2] * 5)
    assert _gaps(3.0, n=50, seed=7) == _gaps(3.0, n=50, seed=7)
    assert _gaps(3.0, n=50, seed=7) != _gaps(3.0, n=50, seed=8)


def test_percentile_matches_linear_interpolation():
    values = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert percentile(values, 50) == 3.0
    assert percentile(values, 90) == pytest.approx(4.6)
    assert percentile(values, 99) == pytest.approx(4.96)
    assert percentile([], 50) is None


def _record(sent, times, asked=None, usage=None, measured=True, error=None):
    r = RequestRecord(level=0, measured=measured, asked_tokens=asked or len(times))
    r.sent_s, r.token_times_s, r.usage_completion_tokens, r.error = sent, list(times), usage, error
    r.end_s = None if error else (times[-1] if times else sent)
    return r


def test_tokens_are_counted_by_arrival_time_inside_the_window():
    r = _record(0.0, [0.5, 1.5, 2.5, 3.5])
    assert tokens_in(r, 1.0, 3.0) == 2
    # usage says 8 tokens in 4 chunks: each chunk carries two
    assert tokens_in(_record(0.0, [0.5, 1.5, 2.5, 3.5], usage=8), 1.0, 3.0) == 4


def test_summary_separates_latency_population_from_window_population():
    window = (10.0, 20.0)
    warm = _record(9.0, [9.5, 10.5, 11.0], measured=False)  # sent before, finishes inside: tokens count
    a = _record(11.0, [11.2, 11.3, 11.4])  # ttft 0.2, tpot 0.1
    b = _record(19.0, [19.5, 20.5, 21.5])  # sent inside, two tokens after the window
    cut = _record(12.0, [12.1], asked=3)  # truncated: counted, not in latency
    failed = _record(13.0, [], error="HTTP 500")
    s = summarize([warm, a, b, cut, failed], *window, slo={"ttft": 0.3})
    assert s["requests_sent"] == 4 and s["requests_completed"] == 3 and s["requests_failed"] == 1
    assert s["failures"] == {"HTTP 500": 1} and s["requests_truncated"] == 1
    assert s["window_output_tokens"] == 2 + 3 + 1 + 1  # warm, a, b (one inside), cut
    assert s["window_requests_completed"] == 3  # warm, a, cut end inside; b ends after
    assert s["window_requests_good"] == 1  # a (warm: ttft 0.5; cut: truncated)
    assert s["ttft_s"]["p50"] == pytest.approx(0.35)  # a and b only
    assert s["tpot_s"]["p50"] == pytest.approx(0.55)  # a: 0.1, b: 1.0
    assert s["slo_attainment"] == pytest.approx(1 / 4)
    figures = energy_figures(s, 70.0)
    assert figures == {"j_per_output_token": 10.0, "j_per_request": 70.0 / 3, "j_per_good_request": 70.0}
    assert energy_figures(summarize([], *window, slo={}), 5.0)["j_per_output_token"] is None


def test_slo_checks_every_limit():
    r = _record(0.0, [0.1, 0.2, 0.3])
    assert meets(r, {}) and meets(r, {"ttft": 0.1, "tpot": 0.1, "e2e": 0.3})
    assert not meets(r, {"ttft": 0.05}) and not meets(r, {"e2e": 0.2}) and not meets(r, {"itl": 0.05})


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: parse_levels("0", "rates", integer=False), "every level must be numbers > 0"),
        (lambda: parse_levels("1,-2", "rates", integer=False), "got -2"),
        (lambda: parse_levels("1.5", "concurrencies", integer=True), "whole numbers"),
        (lambda: parse_levels("a", "rates", integer=False), "separated by commas"),
        (lambda: parse_slo("ttft=fast"), "KEY=SECONDS"),
        (lambda: parse_slo("latency=1"), "KEY=SECONDS"),
        (lambda: parse_slo("ttft=0"), "KEY=SECONDS"),
        (lambda: Lengths.parse("256:64", "output_len"), "low:high"),
        (lambda: LoadConfig(url="127.0.0.1:8000", rates=(1.0,)), "base URL"),
        (lambda: LoadConfig(url="http://h/v1"), "either rates or concurrencies"),
        (lambda: LoadConfig(url="http://h/v1", rates=(1.0,), duration_s=0), "duration_s must be > 0"),
    ],
)
def test_config_errors_name_the_field(call, message):
    with pytest.raises(ConfigError, match=message):
        call()


def test_config_round_trips_json():
    c = LoadConfig(url="http://h/v1", rates=(0.5, 2.0), output_len=Lengths(64, 256), slo={"ttft": 0.5})
    assert LoadConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert parse_slo("ttft=0.5, tpot=0.05s") == {"ttft": 0.5, "tpot": 0.05}


def test_prompts_from_text_are_seeded_and_sized(tmp_path):
    text = " ".join(f"w{i}" for i in range(5000))
    a = from_text(text, Lengths(100, 100), Lengths(8, 16), seed=3, count=20)
    assert a == from_text(text, Lengths(100, 100), Lengths(8, 16), seed=3, count=20)
    assert all(len(p.messages[0]["content"].split()) == 75 + 3 for p in a)  # 0.75 words/token + the instruction
    assert {p.max_tokens for p in a} <= set(range(8, 17)) and len({p.max_tokens for p in a}) > 1
    assert sha256(a) != sha256(from_text(text, Lengths(100, 100), Lengths(8, 16), seed=4, count=20))


def test_prompt_files_openai_and_sharegpt(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text(
        json.dumps({"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]})
        + "\n\n"
        + json.dumps({"conversations": [{"from": "human", "value": "why?"}, {"from": "gpt", "value": "because"}]})
        + "\n"
    )
    p = from_file(f, Lengths(32, 32), seed=0)
    assert [m["content"] for m in p[0].messages] == ["be brief", "hi"]
    assert p[1].messages == ({"role": "user", "content": "why?"},) and p[1].max_tokens == 32
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="holds no prompt"):
        from_file(empty, Lengths(8, 8), 0)
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"text": 1}\n')
    with pytest.raises(ConfigError, match="line 1: not an OpenAI messages record"):
        from_file(bad, Lengths(8, 8), 0)


def test_request_body_pins_length_where_the_server_takes_it():
    p = Prompt(({"role": "user", "content": "x"},), 40)
    e = Endpoint("http://h/v1", "m", "chat", pins=("ignore_eos", "min_tokens"))
    body = e.body(p)
    assert body["max_tokens"] == 40 and body["min_tokens"] == 40 and body["ignore_eos"] is True
    assert body["stream_options"] == {"include_usage": True}
    plain = Endpoint("http://h/v1", "m", "completions", usage_in_stream=False).body(p)
    assert plain["prompt"] == "x" and "stream_options" not in plain and "ignore_eos" not in plain
