"""The serving parts that need no engine: request validation, text streaming with stop strings,
sampling, the energy split on made-up steps, batch sizing, the ledger."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from wattlm.attribution.steps import Attributor, RequestEnergy, Work
from wattlm.attribution.work import WorkModel
from wattlm.errors import ConfigError
from wattlm.jsonlog import Ledger, read_ledger
from wattlm.serve.config import ServeConfig
from wattlm.serve.protocol import BadRequest, ChatRequest, CompletionRequest, params, parse
from wattlm.serve.sampling import Sampler
from wattlm.serve.slo import MIN_SAMPLES, BatchSizer
from wattlm.serve.text import TextStream

# -- requests ----------------------------------------------------------------------------------


def test_requests_parse_and_carry_vllm_length_pins():
    r = parse(CompletionRequest, {"prompt": "hi", "max_tokens": 8, "ignore_eos": True, "min_tokens": 8, "extra": 1})
    p = params(r, max_new_tokens=64)
    assert (p.max_tokens, p.ignore_eos, p.min_tokens, p.temperature) == (8, True, 8, 1.0)
    chat = parse(
        ChatRequest,
        {
            "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}],
            "max_completion_tokens": 5,
            "stop": "x",
        },
    )
    assert params(chat, max_new_tokens=64).max_tokens == 5 and chat.messages[0].text() == "a"
    assert params(parse(CompletionRequest, {"prompt": [1, 2]}), max_new_tokens=64).max_tokens == 16


@pytest.mark.parametrize(
    "body, where",
    [
        ({"prompt": "hi", "max_tokens": "8"}, "max_tokens"),
        ({"prompt": "hi", "temperature": 3}, "temperature"),
        ({"prompt": 5}, "prompt"),
        ({}, "prompt"),
        ({"prompt": "hi", "n": 2}, "n"),
        ({"prompt": "hi", "logprobs": 3}, "logprobs"),
        ({"prompt": "hi", "presence_penalty": 0.5}, "presence_penalty"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages"),
    ],
)
def test_bad_requests_say_which_field(body, where):
    kind = ChatRequest if "messages" in body else CompletionRequest
    with pytest.raises(BadRequest) as e:
        parse(kind, body)
    assert e.value.status == 400 and where in e.value.message


def test_limits_are_checked():
    with pytest.raises(BadRequest, match="over this server's limit of 64"):
        params(parse(CompletionRequest, {"prompt": "x", "max_tokens": 65}), max_new_tokens=64)
    with pytest.raises(BadRequest, match="up to 4"):
        params(parse(CompletionRequest, {"prompt": "x", "stop": ["a"] * 5}), max_new_tokens=64)
    with pytest.raises(BadRequest, match="min_tokens"):
        params(parse(CompletionRequest, {"prompt": "x", "max_tokens": 4, "min_tokens": 5}), max_new_tokens=64)
    with pytest.raises(BadRequest, match="JSON object"):
        parse(CompletionRequest, [1])


def test_config_is_checked():
    with pytest.raises(ConfigError, match="step_tokens"):
        ServeConfig(max_batch=16, step_tokens=8)
    with pytest.raises(ConfigError, match="engine"):
        ServeConfig(engine="vllm")
    assert ServeConfig(api_key="s3cret").to_dict()["api_key"] == "set"


# -- text --------------------------------------------------------------------------------------


def test_stop_strings_across_tokens_hold_back_only_what_could_match():
    s = TextStream(("END",))
    assert s.add(b"hello E") == "hello "  # "E" might start END
    assert s.add(b"x") == "Ex"
    assert s.add(b" E") == " "
    assert s.add(b"ND more") == "" and s.stopped
    assert s.flush() == ""


def test_multibyte_characters_wait_for_their_last_byte():
    s = TextStream(())
    data = "é€".encode()
    assert s.add(data[:1]) == ""
    assert s.add(data[1:3]) == "é"
    assert s.add(data[3:]) == "€"


# -- sampling ----------------------------------------------------------------------------------


def test_sampling():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05], dtype=np.float32))
    assert Sampler(0.0, 1.0, None)(logits) == 0
    assert Sampler(0.0, 1.0, None)(logits, banned=(0,)) == 1
    a, b = Sampler(1.0, 1.0, 11), Sampler(1.0, 1.0, 11)
    assert [a(logits) for _ in range(50)] == [b(logits) for _ in range(50)]
    nucleus = Sampler(1.0, 0.7, 5)
    counts = np.bincount([nucleus(logits) for _ in range(2000)], minlength=4)
    assert counts[2] == counts[3] == 0  # 0.5 + 0.3 reach 0.7: the rest is cut
    assert counts[0] / counts[:2].sum() == pytest.approx(0.5 / 0.8, abs=0.04)
    free = np.bincount([a(logits) for _ in range(4000)], minlength=4) / 4000
    assert free == pytest.approx([0.5, 0.3, 0.15, 0.05], abs=0.03)


def test_sampling_a_large_vocabulary_draws_by_blocks_without_bias():
    logits = np.full(10_000, -np.inf, dtype=np.float32)  # mass in four blocks, banned and empty blocks between
    where = [5, 1023, 1024, 9999]
    logits[where] = np.log([0.1, 0.2, 0.3, 0.4])
    s = Sampler(1.0, 1.0, 3)
    draws = np.array([s(logits) for _ in range(20_000)])
    assert set(np.unique(draws)) <= set(where)
    assert np.bincount(draws, minlength=10_000)[where] / draws.size == pytest.approx([0.1, 0.2, 0.3, 0.4], abs=0.015)
    assert 9999 not in {s(logits, banned=(9999,)) for _ in range(500)}
    nucleus = Sampler(1.0, 0.5, 3)
    assert {nucleus(logits) for _ in range(500)} == {1024, 9999}


# -- the energy split --------------------------------------------------------------------------


class FakeMeter:
    def __init__(self):
        self.t, self.j = 0.0, 0.0

    def __call__(self):
        return self.t, self.j

    def advance(self, seconds, joules):
        self.t += seconds
        self.j += joules


def test_an_interval_is_split_by_step_time_and_the_rest_is_idle():
    meter = FakeMeter()
    a = Attributor(meter)
    r1, r2 = RequestEnergy(), RequestEnergy()
    a.step(0.2, [Work(r1, decode_tokens=1, decode_attended=10), Work(r2, decode_tokens=1, decode_attended=10)])
    a.step(0.3, [Work(r1, prefill_tokens=30)])
    meter.advance(1.0, 100.0)
    settled = a.settle()
    assert [s.energy_j for s in settled] == pytest.approx([20.0, 30.0])
    assert r1.decode_j == pytest.approx(10.0) and r2.decode_j == pytest.approx(10.0)
    assert r1.prefill_j == pytest.approx(30.0) and a.idle_j == pytest.approx(50.0)
    meter.advance(0.5, 40.0)  # nothing ran: all idle
    a.settle()
    t = a.totals()
    assert t["idle"] == pytest.approx(90.0) and t["prefill"] + t["decode"] + t["idle"] == pytest.approx(t["meter"])


def test_the_work_model_learns_marginal_costs_from_step_timings():
    rng = np.random.default_rng(0)
    m = WorkModel()
    a_true, b_true, c_true, t0 = 2e-3, 8e-3, 1e-6, 0.02
    for _ in range(640):
        p, d = int(rng.integers(0, 200)), int(rng.integers(1, 9))
        attended = d * int(rng.integers(10, 500))
        m.observe(p, d, attended, t0 + a_true * p + b_true * d + c_true * attended + rng.normal(0, 1e-4))
    assert m.fitted
    assert (m.a, m.b, m.c) == pytest.approx((a_true, b_true, c_true), rel=0.1)
    heavy, light = RequestEnergy(), RequestEnergy()
    pw, dw = m.weights(Work(heavy, decode_tokens=1, decode_attended=2000))
    pw2, dw2 = m.weights(Work(light, decode_tokens=1, decode_attended=10))
    assert pw == pw2 == 0 and dw > dw2  # a long context's decode token costs more


def test_batch_sizing_picks_the_cheapest_size_that_meets_the_slo():
    sizer = BatchSizer(8, slo_tpot_s=0.05)
    for _ in range(MIN_SAMPLES):
        sizer.add(1, 0.02, 1.0, 1, 0)  # 1.0 J/token
        sizer.add(4, 0.04, 2.0, 4, 0)  # 0.5 J/token
        sizer.add(8, 0.09, 2.4, 8, 0)  # 0.3 J/token but too slow
    assert sizer.cap == 4 and "batch 4" in sizer.reason
    no_slo = BatchSizer(8)
    no_slo.add(8, 1.0, 1.0, 8, 0)
    assert no_slo.cap == 8
    growing = BatchSizer(8, slo_tpot_s=0.05)
    for _ in range(MIN_SAMPLES):
        growing.add(2, 0.03, 1.0, 2, 0)
    assert growing.cap == 3 and "trying 3" in growing.reason


def test_prompt_reading_steps_count_against_their_batch_size():
    sizer = BatchSizer(8, slo_tpot_s=0.05)
    for i in range(100):
        sizer.add(4, 0.03, 1.2, 4, 0)  # decode-only steps meet the SLO...
        if i % 4 == 0:
            sizer.add(4, 0.3, 12.0, 3, 128)  # ...but one in five reads a prompt beside three decoders
        sizer.add(2, 0.02, 0.6, 2, 0)
    four, two = sizer.sizes[4], sizer.sizes[2]
    assert four.decode_only_tpot_s == pytest.approx(0.03)
    assert four.tpot_s > 0.05 and four.j_per_token > 3 * two.j_per_token / 2
    assert sizer.cap in (2, 3)  # 4 misses the SLO as its clients see it


# -- the ledger --------------------------------------------------------------------------------


def test_ledger_lines_are_whole(tmp_path):
    path = tmp_path / "ledger.jsonl"
    ledger = Ledger(path)
    ledger.write({"id": "a", "energy": {"total_j": 1.5}})
    ledger.write({"id": "b"})
    ledger.close()
    with open(path, "a") as f:
        f.write('{"id": "c", "ene')  # a line cut short by a crash
    assert [r["id"] for r in read_ledger(path)] == ["a", "b"]
    assert json.loads(path.read_text().splitlines()[0])["energy"]["total_j"] == 1.5
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"


def test_api_key_from_the_environment(monkeypatch):
    monkeypatch.setenv("WATTLM_API_KEY", "from-env")
    assert ServeConfig().resolved_api_key() == "from-env"
    assert ServeConfig(api_key="given").resolved_api_key() == "given"
    monkeypatch.delenv("WATTLM_API_KEY")
    assert ServeConfig().resolved_api_key() is None


def test_while_loading_every_request_gets_503(tmp_path):
    from starlette.testclient import TestClient

    from wattlm.serve.app import create_app
    from wattlm.serve.service import Service

    service = Service(ServeConfig(), ledger_path=str(tmp_path / "ledger.jsonl"))  # never started: loading
    client = TestClient(create_app(service))
    health = client.get("/health")
    assert health.status_code == 503 and health.json()["status"] == "loading"
    r = client.post("/v1/completions", json={"prompt": "x"})
    assert r.status_code == 503 and "still loading" in r.json()["error"]["message"]
    assert r.headers["retry-after"] == "1"
    service.ledger.close()
