"""The timeline split: conservation, symmetry, hand-computed cases, the work-model fit, the price list."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wattlm.attribution.fit import fit_work_model
from wattlm.attribution.price import price_list
from wattlm.attribution.series import EnergySeries
from wattlm.attribution.timeline import Timeline, split
from wattlm.attribution.work import WorkModel, work_model_from


def constant_power(watts: float, end_s: float, step_s: float = 0.1, start_s: float = 0.0) -> EnergySeries:
    s = EnergySeries()
    n = round((end_s - start_s) / step_s)
    for i in range(n + 1):
        t = start_s + i * step_s
        s.add(t, watts * (t - start_s))
    return s


def test_hand_case_one_request_and_idle():
    # 10 W for 4 s; the request reads its prompt over [0, 1] and decodes over [1, 3]; [3, 4] is idle.
    t = Timeline("r", 0.0, 1.0, 3.0, prompt_tokens=10, output_tokens=11)
    out = split([t], constant_power(10.0, 4.0), WorkModel())
    r = out.requests["r"]
    assert r.prefill_j == pytest.approx(10.0)
    assert r.decode_j == pytest.approx(20.0)
    assert out.idle_j == pytest.approx(10.0)
    assert out.energy_j == pytest.approx(40.0)
    assert r.covered == pytest.approx(1.0)


def test_concurrent_requests_split_by_work_rate():
    # Both decode over [0, 2]; one decodes twice as many tokens, so it does twice the work per second.
    a = Timeline("a", 0.0, 0.0, 2.0, prompt_tokens=1, output_tokens=11)
    b = Timeline("b", 0.0, 0.0, 2.0, prompt_tokens=1, output_tokens=21)
    out = split([a, b], constant_power(30.0, 2.0), WorkModel(a=1e-9, b=1.0))
    assert out.requests["b"].decode_j == pytest.approx(2 * out.requests["a"].decode_j, rel=1e-3)
    assert out.requests_j + out.idle_j == pytest.approx(60.0)


def test_identical_requests_get_equal_energy_and_cache_lowers_prefill():
    same = [Timeline(f"r{i}", 0.0, 1.0, 2.0, prompt_tokens=100, output_tokens=20) for i in range(3)]
    cached = Timeline("c", 0.0, 1.0, 2.0, prompt_tokens=100, output_tokens=20, cached_tokens=80)
    out = split([*same, cached], constant_power(50.0, 2.0), WorkModel(a=0.001, b=0.01))
    e = [out.requests[f"r{i}"].energy_j for i in range(3)]
    assert max(e) - min(e) < 1e-9
    assert out.requests["c"].prefill_j < 0.3 * out.requests["r0"].prefill_j
    assert out.requests_j + out.idle_j == pytest.approx(out.energy_j)


def test_token_times_place_decode_work_where_tokens_came():
    # Tokens all come in [1, 1.5]; the second half of the decode span has no decode work of this
    # request, so a second request decoding there alone takes all of that energy.
    a = Timeline("a", 0.0, 1.0, 2.0, 4, 11, token_times_s=tuple(1.0 + 0.05 * i for i in range(11)))
    b = Timeline("b", 1.5, 1.5, 2.0, 4, 6, prefill_start_s=1.5)
    out = split([a, b], constant_power(10.0, 2.0), WorkModel())
    assert out.requests["b"].decode_j == pytest.approx(5.0, rel=0.02)


def test_work_outside_the_series_is_not_charged_and_said():
    t = Timeline("r", 1.0, 2.0, 6.0, prompt_tokens=10, output_tokens=41)
    out = split([t], constant_power(10.0, 4.0), WorkModel())
    r = out.requests["r"]
    assert r.covered == pytest.approx(0.6)  # the prompt (10) and half the decoding (20) of 50
    assert out.requests_j + out.idle_j == pytest.approx(40.0)


def test_lost_reads_mark_the_requests_they_touch():
    s = EnergySeries()
    for t, j, g in [(0, 0, 0), (1, 10, 0), (2, 10, 1), (3, 20, 1), (4, 30, 1)]:
        s.add(float(t), float(j), g)
    inside = Timeline("gap", 1.2, 1.5, 1.9, 5, 3)
    clear = Timeline("ok", 3.1, 3.3, 3.9, 5, 3)
    out = split([inside, clear], s, WorkModel())
    assert out.requests["gap"].partial and not out.requests["ok"].partial
    assert out.gaps == 1


def test_bad_timelines_are_named():
    assert "order" in Timeline("x", 2.0, 1.0, 3.0, 5, 5).problems()
    assert "output" in Timeline("x", 0.0, 1.0, 3.0, 5, 0).problems()
    assert Timeline("x", 0.0, 1.0, 3.0, 5, 5).problems() == ""


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0, 8),
            st.floats(0, 2),
            st.floats(0, 4),
            st.integers(1, 500),
            st.integers(1, 100),
            st.integers(0, 500),
        ),
        min_size=1,
        max_size=12,
    ),
    st.floats(1, 400),
)
def test_conservation_holds_for_any_timelines(rows, watts):
    timelines = [
        Timeline(f"r{i}", a, a + p, a + p + d, prompt, out, cached_tokens=min(cached, prompt))
        for i, (a, p, d, prompt, out, cached) in enumerate(rows)
    ]
    series = constant_power(watts, 10.0, step_s=0.37)
    res = split(timelines, series, WorkModel(a=0.002, b=0.02, c=1e-6))
    assert res.requests_j + res.idle_j == pytest.approx(res.energy_j, rel=1e-9, abs=1e-9)
    # idle is the energy of the time no request was worked on
    spans = []
    for t in timelines:
        start = t.prefill_start_s if t.prefill_start_s is not None else t.arrival_s
        spans.append((start, max(t.first_token_s, start + 1e-3)))
        if t.output_tokens > 1:
            spans.append((t.first_token_s, max(t.end_s, t.first_token_s + 1e-3)))
    busy_s, cur = 0.0, None
    for s0, e0 in sorted(spans):
        if cur is None or s0 > cur[1]:
            busy_s += 0.0 if cur is None else min(cur[1], series.end_s) - cur[0]
            cur = [s0, e0]
        else:
            cur[1] = max(cur[1], e0)
    busy_s += min(cur[1], series.end_s) - cur[0]
    expected_idle = watts * (series.end_s - series.start_s - busy_s)
    assert res.idle_j == pytest.approx(expected_idle, rel=1e-4, abs=1e-4)  # rounding lands in idle
    assert all(r.prefill_j >= 0 and r.decode_j >= 0 for r in res.requests.values())


def simulated_server(a_s: float, b_s: float, n: int, seed: int = 0) -> list[Timeline]:
    """One request at a time: prompt reading takes a·P, each decoded token b."""
    rng = random.Random(seed)
    now, out = 0.0, []
    for i in range(n):
        prompt, tokens = rng.randint(16, 400), rng.randint(4, 96)
        first = now + a_s * prompt
        times = tuple(first + b_s * k for k in range(tokens))
        out.append(Timeline(f"r{i}", now, first, times[-1], prompt, tokens, token_times_s=times))
        now = times[-1]
    return out


def test_work_model_fit_recovers_a_and_b_from_timelines():
    fit = fit_work_model(simulated_server(0.002, 0.02, 200), bucket_s=0.5)
    assert fit.model.a == pytest.approx(0.002, rel=0.15)
    assert fit.model.b == pytest.approx(0.02, rel=0.15)
    assert "fitted" in fit.how


def test_work_model_fit_falls_back_with_too_little():
    fit = fit_work_model(simulated_server(0.002, 0.02, 1))
    assert fit.model.a == fit.model.b and "default" in fit.how


def test_work_model_from_a_serve_run():
    m = work_model_from({"a_s_per_prompt_token": 0.001, "b_s_per_decode_token": 0.01, "c_s_per_attended": 0.0})
    assert (m.a, m.b, m.c) == (0.001, 0.01, 0.0)
    with pytest.raises(ValueError, match="a > 0"):
        work_model_from({"a_s_per_prompt_token": 0, "b_s_per_decode_token": 0.01})


def test_price_list_recovers_coefficients_with_intervals():
    rng = random.Random(1)
    p = [rng.randint(10, 300) for _ in range(200)]
    o = [rng.randint(5, 100) for _ in range(200)]
    j = [2.0 + 0.01 * x + 0.3 * y + rng.gauss(0, 0.5) for x, y in zip(p, o)]
    fit = price_list(p, o, j)
    assert fit is not None
    lo, hi = fit["interval95"]["gamma_j_per_output_token"]
    assert lo < 0.3 < hi and hi - lo < 0.05
    lo, hi = fit["interval95"]["beta_j_per_prompt_token"]
    assert lo < fit["beta_j_per_prompt_token"] < hi and abs(fit["beta_j_per_prompt_token"] - 0.01) < 0.002
    assert fit["r2"] > 0.9


def test_price_list_leaves_out_a_length_that_did_not_vary():
    fit = price_list([128] * 20, list(range(20)), [1.0 + 0.2 * i for i in range(20)])
    assert fit is not None
    assert fit["beta_j_per_prompt_token"] is None and "prompt length did not vary" in fit["not_priced"][0]
    assert fit["gamma_j_per_output_token"] == pytest.approx(0.2)
    assert price_list([1], [1], [1.0]) is None


def test_decode_pace_follows_the_requests_decoding_beside_it():
    from wattlm.attribution.timeline import decode_pace

    # A decodes 100 tokens over [0, 10]; B, beside it over [4, 6], only 10: the server's pace there was
    # half of A's even pace, so A's other 90 tokens fell outside [4, 6].
    a = Timeline("a", 0.0, 0.0, 10.0, prompt_tokens=5, output_tokens=101)
    b = Timeline("b", 4.0, 4.0, 6.0, prompt_tokens=5, output_tokens=11, prefill_start_s=4.0)
    pace = decode_pace([a, b])
    assert pace is not None and list(pace.edges) == [0.0, 4.0, 6.0, 10.0]
    steps = pace.rate * np.diff(pace.edges)
    assert steps / steps.sum() * 100 == pytest.approx([45.0, 10.0, 45.0], rel=0.02)
    assert decode_pace([a]) is None  # alone: an even pace
    streamed = Timeline("s", 0.0, 0.0, 10.0, 5, 3, token_times_s=(0.0, 5.0, 10.0))
    assert "s" not in decode_pace([a, b, streamed]).ids  # its own token times place its tokens
    # the split follows the pace: at 10 W, A's decode energy over [4, 6] is shared with B by the
    # tokens each decoded there (10 and 10), so B gets 10 J and A 90 J.
    out = split([a, b], constant_power(10.0, 10.0), WorkModel(a=1e-9, b=1.0))
    assert out.requests["b"].decode_j == pytest.approx(10.0, rel=0.03)
    assert out.requests["a"].decode_j == pytest.approx(90.0, rel=0.01)


def test_tokens_delivered_together_are_not_stretched_past_the_end():
    from wattlm.attribution.timeline import pieces

    # 9 tokens in three bursts of three chunks 0.1 ms apart: pieces keep inside [first, end]
    times = tuple(base + 1e-4 * i for base in (1.0, 1.5, 2.0) for i in range(3))
    t = Timeline("r", 0.0, 1.0, times[-1], prompt_tokens=4, output_tokens=9, token_times_s=times)
    decode = [p for p in pieces(t, WorkModel()) if p.phase == "decode"]
    assert decode[0].start_s == 1.0 and decode[-1].end_s == pytest.approx(times[-1])
    assert sum(p.tokens for p in decode) == pytest.approx(8)
    assert all(p.end_s - p.start_s >= 1e-3 for p in decode)
