"""Prefix caching: where a request goes and how much of its prompt it skips (unit), and on a real
tiny GGUF in llama.cpp that reused and copied cells give the answer reading from scratch gives,
that a prompt diverging mid-prefix or a source cancelled mid-copy stays correct, and that a reused
prefix is not charged again while every joule still goes to a request or to idle."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.serve.test_scheduler import Collect, params, service, submit
from wattlm.jsonlog import read_ledger
from wattlm.serve.prefix import PrefixCache, common_prefix


@given(st.lists(st.integers(0, 3), max_size=60), st.lists(st.integers(0, 3), max_size=60))
def test_common_prefix_is_the_first_difference(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    assert common_prefix(a, b) == n


def test_placement_prefers_the_longest_cached_prefix_then_the_least_recently_used():
    c = PrefixCache(3, min_copy_tokens=4)
    assert c.place([1, 2, 3], [0, 1, 2], {}).slot == 0  # nothing cached: the least recently used
    c.hold(0, [1, 2, 3, 9])
    assert c.place([5, 6], [1, 2], {}).slot == 1
    c.hold(1, [5, 6, 7])
    c.place([8], [2], {})
    c.hold(2, [8])
    p = c.place([1, 2, 3, 4, 5], [0, 1, 2], {})
    assert (p.slot, p.reuse, p.copy_from) == (0, 3, None)
    c.hold(0, [1, 2, 3, 4, 5])
    whole = c.place([1, 2, 3, 4, 5], [0, 1, 2], {})
    assert (whole.slot, whole.reuse) == (0, 4)  # the last prompt token is always read: it gives the logits
    c.hold(0, [1, 2, 3, 4, 5])
    evict = c.place([7, 7], [0, 1, 2], {})
    assert (evict.slot, evict.reuse) == (1, 0)  # no match: slot 1 was used longest ago, slot 0 keeps its prefix
    s = c.stats()
    assert s["lookups"] == 6 and s["hits"] == 2 and s["cached_tokens"] == 7


def test_a_busy_slot_is_copied_only_when_it_saves_enough():
    c = PrefixCache(3, min_copy_tokens=4)
    prompt = list(range(20))
    short = c.place(prompt, [1, 2], {0: list(range(3))})
    assert short.copy_from is None and short.reuse == 0
    c.hold(short.slot, [])
    far = c.place(prompt, [1, 2], {0: list(range(12)) + [99]})
    assert (far.copy_from, far.reuse) == (0, 12) and far.slot in (1, 2)
    off = PrefixCache(2, enabled=False)
    off.hold(0, prompt)
    assert off.place(prompt, [0, 1], {}).reuse == 0


def fresh(tmp_path, name):
    folder = tmp_path / name
    folder.mkdir()
    return folder


def run(s, prompt, p):
    return submit(s, prompt, p)[1].wait()


@pytest.mark.engines
def test_reused_and_diverging_prefixes_answer_as_reading_from_scratch(gguf, tmp_path):
    cold, loaded_cold = service(gguf, fresh(tmp_path, "cold"), prefix_cache=False, max_batch=2)
    warm, loaded = service(gguf, fresh(tmp_path, "warm"), max_batch=2)
    try:
        tok = loaded.engine.tokenize
        a = tok("To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer")
        b = a[:40] + tok(" the slings and arrows of outrageous fortune")
        first = run(warm, a, params(10))
        again = run(warm, a, params(10))
        diverged = run(warm, b, params(10))
        ref_a, ref_b = run(cold, a, params(10)), run(cold, b, params(10))
    finally:
        warm.close()
        cold.close()
    assert first.cached_tokens == 0 and again.cached_tokens == len(a) - 1
    assert diverged.cached_tokens == 40  # the slot's cells past the shared 40 tokens were dropped
    assert first.text == again.text == ref_a.text and diverged.text == ref_b.text
    assert again.timings["cache_n"] == len(a) - 1 and again.timings["prompt_n"] == 1
    assert ref_a.cached_tokens == 0 and ref_b.cached_tokens == 0
    # Not charged again: the cached request's prompt reading (one token) cost less than the first one's
    # (energy is timed: on a busy machine one short step can stretch, so no tighter bound is asserted)
    assert again.energy.prefill_j < first.energy.prefill_j
    ledger = read_ledger(tmp_path / "warm" / "ledger.jsonl")
    assert [x["cached_tokens"] for x in ledger] == [0, len(a) - 1, 40]


@pytest.mark.engines
def test_cells_copied_from_a_running_request_survive_its_cancellation(gguf, tmp_path):
    s, loaded = service(gguf, tmp_path, max_batch=2)
    cold, _ = service(gguf, fresh(tmp_path, "cold"), prefix_cache=False, max_batch=2)
    try:
        tok = loaded.engine.tokenize
        shared = tok("Now is the winter of our discontent made glorious summer by this sun of York; ")
        assert len(shared) >= 40
        follower = shared + tok("and all the clouds")
        started = Collect(on_delta=lambda c: None)
        job, long = submit(s, shared, params(200), started)
        while len(long.deltas) < 3:  # the long request is decoding: its cells hold the whole prefix
            time.sleep(0.005)
        with s.scheduler._cond:  # one loop turn: the copy is planned, then the source cancelled in the same step
            follow_job, follow = submit(s, follower, params(12))
            job.cancel()
        got = follow.wait()
        assert long.wait().status == "cancelled"
        after = run(s, tok("a different prompt entirely"), params(4))
        ref = run(cold, follower, params(12))
        stats = s.scheduler.cache.stats()
    finally:
        s.close()
        cold.close()
    assert got.status == "completed" and got.cached_tokens >= len(shared) - 1 and stats["copies"] >= 1
    assert got.text == ref.text
    assert after.status == "completed" and s.scheduler.free_slots == 2


@pytest.mark.engines
def test_energy_still_adds_up_with_the_cache(gguf, tmp_path):
    s, loaded = service(gguf, tmp_path, max_batch=3)
    s.meter.begin_window("test")
    try:
        base = loaded.engine.tokenize("system: answer in verse. user: ")
        collects = [
            submit(s, base + loaded.engine.tokenize(f"question {i % 4} " * (1 + i % 3)), params(5))[1]
            for i in range(12)
        ]
        for c in collects:
            assert c.wait().status == "completed"
        time.sleep(0.1)
        s.attributor.settle()
        m = s.meter.end_window("test")
        totals = s.attributor.totals()
    finally:
        s.close()
    ledger = read_ledger(tmp_path / "ledger.jsonl")
    assert sum(x["cached_tokens"] for x in ledger) > 0
    assert totals["prefill"] + totals["decode"] + totals["idle"] == pytest.approx(totals["meter"], rel=1e-9)
    charged = sum(x["energy"]["total_j"] for x in ledger)
    assert charged + totals["idle"] == pytest.approx(m.it_energy_j, rel=0.005)


@pytest.mark.engines
@pytest.mark.parametrize("schedule", ["interleave", "prefill-first"])
def test_schedules_read_prompts_in_chunks_or_whole(gguf, tmp_path, schedule):
    s, loaded = service(gguf, tmp_path, start=False, max_batch=2, step_tokens=32, schedule=schedule)
    calls: list[int] = []
    real = loaded.engine.decode
    loaded.engine.decode = lambda items: calls.append(sum(len(i.tokens) for i in items)) or real(items)
    s.start(loaded)
    try:
        prompt = loaded.engine.tokenize("Once more unto the breach, dear friends, once more; " * 2)
        assert len(prompt) > 64
        done = run(s, prompt, params(4))
        stats = s.stats()
    finally:
        s.close()
    assert done.status == "completed" and stats["schedule"] == schedule
    if schedule == "interleave":
        assert calls[0] == 32 and max(calls) == 32  # 32-token chunks
    else:
        assert calls[0] == len(prompt)  # the whole prompt in one engine call (llama.cpp splits it in 32s)


def test_auto_schedule_follows_the_slos():
    from wattlm.serve.config import ServeConfig

    assert ServeConfig().resolved_schedule == "interleave"
    assert ServeConfig(slo_tpot_s=0.05).resolved_schedule == "prefill-first"
    assert ServeConfig(slo_tpot_s=0.05, slo_ttft_s=1.0).resolved_schedule == "interleave"
    assert ServeConfig(schedule="prefill-first").engine_tokens == 2048


@pytest.mark.engines
def test_the_returning_clients_of_a_batch_are_read_together(gguf, tmp_path):
    s, loaded = service(gguf, tmp_path, start=False, max_batch=4, schedule="prefill-first")
    calls: list[int] = []
    real = loaded.engine.decode
    loaded.engine.decode = lambda items: calls.append(len(items)) or real(items)
    s.start(loaded)
    try:
        tok = loaded.engine.tokenize
        with s.scheduler._cond:
            first = [submit(s, tok(f"first wave {i}"), params(3))[1] for i in range(4)]
        for c in first:
            c.wait()
        calls.clear()
        second = []
        for i in range(4):  # the clients come back one by one, 5 ms apart
            second.append(submit(s, tok(f"second wave {i}"), params(3))[1])
            time.sleep(0.005)
        for c in second:
            c.wait()
        wave = list(calls)
        time.sleep(0.3)  # then, at an idle server, one request alone goes at once
        calls.clear()
        alone = submit(s, tok("alone"), params(2))[1].wait()
    finally:
        s.close()
    assert alone.status == "completed" and alone.timings["queue_ms"] < 40
    assert all(c.done.status == "completed" for c in second)
    assert wave[0] == 4  # all four prompts in the wave's first step, not one alone
