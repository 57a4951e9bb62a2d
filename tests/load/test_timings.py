"""Server timings in answers (llama.cpp, wattlm serve, Ollama, TGI) and the timelines built from them."""

from __future__ import annotations

import pytest

from wattlm.load.client import RequestRecord, _absorb
from wattlm.load.requests import timeline_of
from wattlm.load.timings import from_body, from_headers


def test_llama_cpp_timings():
    t = from_body(
        {"timings": {"prompt_n": 12, "prompt_ms": 40.0, "cache_n": 176, "predicted_n": 64, "predicted_ms": 500}}
    )
    assert t is not None and t.source == "llama.cpp"
    assert (t.prompt_s, t.decode_s, t.prompt_tokens, t.cached_tokens, t.decode_tokens) == (0.04, 0.5, 12, 176, 64)
    assert t.queue_s is None


def test_wattlm_serve_timings_carry_the_queue():
    t = from_body(
        {
            "timings": {
                "queue_ms": 250.0,
                "prompt_n": 30,
                "cache_n": 0,
                "prompt_ms": 20.0,
                "predicted_n": 5,
                "predicted_ms": 90.0,
            }
        }
    )
    assert t is not None and t.source == "wattlm" and t.queue_s == 0.25


def test_ollama_durations_in_nanoseconds():
    t = from_body(
        {
            "prompt_eval_count": 26,
            "prompt_eval_duration": 130_079_000,
            "eval_count": 259,
            "eval_duration": 4_232_710_000,
        }
    )
    assert t is not None and t.source == "ollama"
    assert t.prompt_s == pytest.approx(0.130079) and t.decode_s == pytest.approx(4.23271)
    assert (t.prompt_tokens, t.decode_tokens) == (26, 259)


def test_tgi_headers_and_nothing_to_take():
    t = from_headers({"x-queue-time": "120", "x-inference-time": "900"})
    assert t is not None and t.source == "tgi" and t.queue_s == 0.12
    assert from_headers({"content-type": "text/event-stream"}) is None
    assert from_headers({"x-queue-time": "soon"}) is None
    assert from_body({"choices": []}) is None
    assert from_body({"timings": {"prompt_ms": -3}}).prompt_s is None  # a negative time is not a time


def record(**kw) -> RequestRecord:
    r = RequestRecord(0, True, 8, sent_s=10.0, end_s=12.0, token_times_s=[10.5 + 0.1 * i for i in range(8)])
    r.usage_prompt_tokens, r.usage_completion_tokens = 100, 8
    for k, v in kw.items():
        setattr(r, k, v)
    return r


def test_server_timings_place_prompt_reading_before_the_first_token():
    r = record()
    _absorb(r, {"id": "chatcmpl-9", "timings": {"prompt_n": 40, "prompt_ms": 200.0, "cache_n": 60}}, 12.0)
    t, why = timeline_of(r, r.response_id)
    assert why == "" and t.id == "chatcmpl-9" and t.source == "server-timings"
    assert t.prefill_start_s == pytest.approx(10.3) and t.first_token_s == 10.5 and t.cached_tokens == 60
    client, _ = timeline_of(record(), "x")
    assert client.source == "client" and client.prefill_start_s is None


def test_usage_cached_tokens_and_what_cannot_be_placed():
    r = record()
    _absorb(
        r,
        {"usage": {"completion_tokens": 8, "prompt_tokens": 100, "prompt_tokens_details": {"cached_tokens": 64}}},
        12.0,
    )
    t, _ = timeline_of(r, "x")
    assert t.cached_tokens == 64
    assert timeline_of(record(error="HTTP 500", end_s=None), "x")[1].startswith("not completed")
    assert "usage" in timeline_of(record(usage_prompt_tokens=None), "x")[1]
    assert "not streamed" in timeline_of(record(streamed=False, token_times_s=[]), "x")[1]
