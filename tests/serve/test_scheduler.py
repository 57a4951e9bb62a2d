"""The engine loop and the energy split on a real (tiny) GGUF in llama.cpp, metered by a 100 W
counter: every joule goes to a request or to idle, shares are fair, cancellation and failures stay
local."""

from __future__ import annotations

import threading
import time

import pytest

from tests.fakes.sources import WATTS, ConstantPower
from tests.serve.helpers import tiny_gguf
from wattlm.energy.meter import EnergyMeter
from wattlm.jsonlog import read_ledger
from wattlm.serve.config import ServeConfig
from wattlm.serve.load import load, plan
from wattlm.serve.protocol import Params
from wattlm.serve.scheduler import Delta, Done, Overloaded, Unavailable
from wattlm.serve.service import Service

pytestmark = pytest.mark.engines


@pytest.fixture(scope="module")
def gguf(tmp_path_factory):
    return tiny_gguf(tmp_path_factory.mktemp("tiny"))


def params(max_tokens=16, **kw):
    base = dict(max_tokens=max_tokens, temperature=0.0, top_p=1.0, seed=None, stop=(), ignore_eos=True, min_tokens=0)
    return Params(**(base | kw))


class Collect:
    """What one request's emit callback received."""

    def __init__(self, on_delta=None):
        self.deltas: list[Delta] = []
        self.done: Done | None = None
        self.event = threading.Event()
        self.on_delta = on_delta

    def __call__(self, event):
        if isinstance(event, Done):
            self.done = event
            self.event.set()
        else:
            self.deltas.append(event)
            if self.on_delta:
                self.on_delta(self)

    def wait(self, timeout=60):
        assert self.event.wait(timeout), "the request never finished"
        return self.done


def service(gguf, tmp_path, start=True, **kw):
    config = ServeConfig(model=str(gguf), max_prompt_tokens=256, max_new_tokens=256, threads=1, **kw)
    meter = EnergyMeter([ConstantPower()], interval_s=0.05)
    s = Service(config, meter=meter, ledger_path=str(tmp_path / "ledger.jsonl"))
    loaded = load(config, plan(config))
    if start:
        s.start(loaded)
    return s, loaded


def submit(s, prompt, p, collect=None, endpoint="completions"):
    c = collect or Collect()
    job = s.job(prompt, p, c, endpoint)
    s.scheduler.submit(job)
    return job, c


def test_requests_and_idle_add_up_to_the_meter(gguf, tmp_path):
    s, loaded = service(gguf, tmp_path)
    s.meter.begin_window("test")
    try:
        ids = loaded.engine.tokenize("To be, or not to be, that is the question")
        collects = [submit(s, ids * (1 + i % 3), params(4 + 3 * i))[1] for i in range(10)]
        snapshots = []
        while not all(c.event.is_set() for c in collects):
            snapshots.append(s.attributor.totals())
            time.sleep(0.01)
        for c in collects:
            assert c.wait().status == "completed"
        time.sleep(0.2)  # some idle time after the last request
        s.attributor.settle()
        m = s.meter.end_window("test")
        totals = s.attributor.totals()
    finally:
        s.close()
    # Any interval: the split adds up to what the meter read at that settle.
    for t in snapshots + [totals]:
        assert t["prefill"] + t["decode"] + t["idle"] == pytest.approx(t["meter"], rel=1e-9, abs=1e-9)
    # Against an independent window over the same span: the ledger plus idle is the meter (≤ 0.5 %).
    ledger = read_ledger(tmp_path / "ledger.jsonl")
    assert len(ledger) == 10 and {r["status"] for r in ledger} == {"completed"}
    charged = sum(r["energy"]["total_j"] for r in ledger)
    assert charged + totals["idle"] == pytest.approx(m.it_energy_j, rel=0.005)
    assert totals["idle"] >= 0.9 * WATTS * 0.2  # the quiet end is idle, not any request's
    assert all(r["energy"]["prefill_j"] > 0 and r["energy"]["decode_j"] > 0 for r in ledger)


def test_identical_requests_in_one_batch_get_equal_energy_and_longer_decodes_more(gguf, tmp_path):
    s, loaded = service(gguf, tmp_path, start=False, max_batch=4)
    ids = loaded.engine.tokenize("whether 'tis nobler in the mind to suffer")
    s.start(loaded)
    s.scheduler._cond.acquire()  # hold the loop so all four join the same first step
    try:
        same = [submit(s, ids, params(12))[1] for _ in range(3)]
        longer = submit(s, ids, params(24))[1]
    finally:
        s.scheduler._cond.release()
    done = [c.wait() for c in same]
    long_done = longer.wait()
    s.close()
    energies = [d.energy.total_j for d in done]
    assert max(energies) <= 1.02 * min(energies)
    assert long_done.energy.prefill_j == pytest.approx(done[0].energy.prefill_j, rel=0.02)
    assert long_done.energy.decode_j > 1.3 * done[0].energy.decode_j
    assert all(d.completion_tokens == 12 for d in done) and long_done.completion_tokens == 24


def test_a_cancelled_request_frees_its_slot_at_the_next_step_and_keeps_its_energy(gguf, tmp_path):
    s, loaded = service(gguf, tmp_path, max_batch=2)
    ids = loaded.engine.tokenize("sea of troubles")
    seen = {}

    def cancel_after_three(c):
        if len(c.deltas) == 3:
            seen["steps"] = s.scheduler.steps
            job.cancel()

    job, c = submit(s, ids, params(200), Collect(cancel_after_three))
    done = c.wait()
    time.sleep(0.05)
    free = s.scheduler.free_slots
    s.close()
    assert done.status == "cancelled" and done.completion_tokens <= 4
    assert s.scheduler.steps - seen["steps"] <= 2  # gone within one step of being cancelled
    assert free == 2
    assert done.energy.total_j > 0
    (line,) = read_ledger(tmp_path / "ledger.jsonl")
    assert line["status"] == "cancelled" and line["energy"]["total_j"] == pytest.approx(done.energy.total_j)


def test_one_request_failing_in_the_engine_fails_alone(gguf, tmp_path):
    s, loaded = service(gguf, tmp_path, start=False)
    engine = loaded.engine
    poison = tuple(engine.tokenize("slings and arrows"))
    real = engine.decode

    def decode(items):  # llama.cpp refusing one sequence's tokens
        if any(item.tokens == poison for item in items):
            raise RuntimeError("llama_decode failed with code -1")
        return real(items)

    engine.decode = decode
    s.start(loaded)
    ok = [submit(s, engine.tokenize("To be, or not to be"), params(8))[1] for _ in range(3)]
    bad = submit(s, list(poison), params(8))[1]
    results = [c.wait() for c in ok]
    failed = bad.wait()
    s.close()
    assert [r.status for r in results] == ["completed"] * 3 and all(r.completion_tokens == 8 for r in results)
    assert failed.status == "failed" and "code -1" in failed.error


def test_full_queue_and_draining_are_refused(gguf, tmp_path):
    s, loaded = service(gguf, tmp_path, max_batch=1, max_queue=2)
    ids = loaded.engine.tokenize("question")
    busy = Collect()
    started = threading.Event()
    busy.on_delta = lambda c: started.set()
    submit(s, ids, params(60), busy)  # holds the only slot
    assert started.wait(30)
    for _ in range(2):
        submit(s, ids, params(4))
    with pytest.raises(Overloaded):
        submit(s, ids, params(4))
    s.drain(30)
    with pytest.raises(Unavailable):
        submit(s, ids, params(4))
    s.close()
    assert [r["status"] for r in read_ledger(tmp_path / "ledger.jsonl")] == ["completed"] * 3


def test_sampling_stop_strings_and_lengths(gguf, tmp_path):
    s, loaded = service(gguf, tmp_path)
    ids = loaded.engine.tokenize("To be, or not to be")
    seeded = [submit(s, ids, params(12, temperature=0.9, seed=7))[1] for _ in range(2)]
    other = submit(s, ids, params(12, temperature=0.9, seed=8))[1]
    greedy = submit(s, ids, params(12))[1]
    texts = [c.wait().text for c in seeded]
    assert texts[0] == texts[1] and other.wait().text != texts[0]  # a seed gives one answer whatever else runs
    first = greedy.wait().text
    stop = first[3:6]
    cut = submit(s, ids, params(12, stop=(stop,)))[1].wait()
    eos_free = submit(s, ids, params(20, ignore_eos=False, min_tokens=20))[1].wait()
    s.close()
    assert cut.finish_reason == "stop" and cut.text == first[: first.index(stop)]
    assert eos_free.completion_tokens == 20 and eos_free.finish_reason == "length"
