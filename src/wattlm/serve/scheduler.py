"""The engine loop: continuous batching over slots, one engine call per step.

Each step decodes one token for every running sequence and fills the rest of the step's token
budget with prompts still being read. Two schedules: `interleave` reads prompts in chunks of the
step budget (chunked prefill), so a long prompt never stalls the others' decoding for long and
first tokens come soon; `prefill-first` reads every waiting prompt whole in the next step, as
llama.cpp's server does, so most decode steps carry no prompt tokens. A new request starts after
the longest prefix of its prompt some slot's cells already hold (prefix.py). Requests join at the
next step and leave the moment they finish or their client goes away. The loop runs in its own
thread and knows nothing of HTTP: requests come in through `submit`, and every token and the final
result go out through the request's `emit` callback.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..attribution.steps import Attributor, RequestEnergy, Work
from ..engines.batch import BatchItem
from .prefix import PrefixCache
from .protocol import Params
from .sampling import Sampler
from .slo import BatchSizer
from .text import TextStream


class Engine(Protocol):
    max_seqs: int
    eog_ids: tuple[int, ...]

    def decode(self, items: list[BatchItem]) -> dict[int, Any]: ...
    def piece(self, token: int) -> bytes: ...
    def release(self, slot: int) -> None: ...


class CachingEngine(Engine, Protocol):
    """An engine whose slots keep their cells after a request, for prefix caching."""

    def keep(self, slot: int, n: int) -> None: ...
    def copy(self, source: int, slot: int) -> None: ...


# When the last step was a batch of N, ended just before the first of fewer than N new requests
# arrived (none of them begun), wait this long after that arrival for the others: the clients of a
# batch that ended together come back within milliseconds of each other, and reading their prompts
# in one step keeps them in step (one long prompt step, then decode steps of the whole batch)
# instead of staggering them. A request arriving at an idle server never waits.
GATHER_S = 0.05


class Overloaded(Exception):
    """The queue is full: answer 429."""


class Unavailable(Exception):
    """The server is draining: answer 503."""


@dataclass(frozen=True)
class Delta:
    text: str
    tokens: int


@dataclass(frozen=True)
class Done:
    """The end of a request: status completed / cancelled / failed, with everything the ledger keeps."""

    status: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    ttft_s: float | None
    e2e_s: float
    energy: RequestEnergy | None
    cached_tokens: int = 0  # prompt tokens whose cells were reused, not read
    text: str = ""
    error: str = ""
    timings: dict[str, float] | None = None  # llama.cpp's `timings` shape, plus queue_ms


@dataclass(eq=False)
class Job:
    id: str
    prompt: list[int]
    params: Params
    emit: Callable[[Delta | Done], None]
    endpoint: str = ""  # "chat" or "completions"
    arrival_s: float = field(default_factory=time.monotonic)
    cancelled: bool = False  # set by the HTTP side when the client goes away
    # engine-side state
    slot: int | None = None
    cached: int = 0  # prompt tokens whose cells came from the prefix cache
    prefilled: int = 0  # prompt tokens whose cells are in the slot (the cached ones included)
    generated: list[int] = field(default_factory=list)
    prefill_start_s: float | None = None  # the start of the step that read its first prompt chunk
    first_token_s: float | None = None
    energy: RequestEnergy = field(default_factory=RequestEnergy)
    text: list[str] = field(default_factory=list)
    sampler: Sampler | None = None
    stream: TextStream | None = None

    def cancel(self) -> None:
        self.cancelled = True


class Scheduler:
    def __init__(
        self,
        engine: Engine,
        *,
        max_batch: int,
        max_queue: int,
        step_tokens: int,
        attributor: Attributor | None,
        sizer: BatchSizer,
        interval_s: float = 0.1,
        schedule: str = "interleave",
        prefill_tokens: int | None = None,
        prefix_cache: bool = True,
        on_done: Callable[[Job, Done], None] = lambda job, done: None,
        on_step: Callable[[int, int], None] = lambda batch, queued: None,
        after_events: Callable[[], None] = lambda: None,
    ) -> None:
        self.engine, self.max_batch, self.max_queue, self.step_tokens = engine, max_batch, max_queue, step_tokens
        self.attributor, self.sizer, self.interval_s = attributor, sizer, interval_s
        if schedule not in ("interleave", "prefill-first"):
            raise ValueError(f"unknown schedule {schedule!r}")
        self.schedule = schedule
        # prefill-first: the prompt tokens one step may read; interleave: the step budget itself
        self.prefill_tokens = prefill_tokens or step_tokens
        caching = prefix_cache and callable(getattr(engine, "keep", None)) and callable(getattr(engine, "copy", None))
        self.cache = PrefixCache(max_batch, enabled=caching)
        self._on_done, self._on_step = on_done, on_step
        self._after_events = after_events  # once per loop turn, after its emits: lets a consumer batch them
        self._waiting: deque[Job] = deque()
        self._active: dict[int, Job] = {}  # slot → job
        self._free = list(range(max_batch))
        self._cond = threading.Condition()
        self._stopping = False
        self.draining = False
        self._thread: threading.Thread | None = None
        self._last_batch = 0  # sequences in the last step
        self._last_end_s = 0.0  # when it ended (monotonic)
        self.steps = 0
        self.error: BaseException | None = None  # what stopped the loop, if it died

    # -- the HTTP side -------------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        with self._cond:
            if self.draining or self._stopping:
                raise Unavailable("the server is shutting down; retry on another replica")
            if len(self._waiting) >= self.max_queue:
                raise Overloaded(f"{len(self._waiting)} requests are already waiting; retry later")
            self._waiting.append(job)
            self._cond.notify()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify()

    @property
    def in_flight(self) -> int:
        return len(self._waiting) + len(self._active)

    @property
    def queued(self) -> int:
        return len(self._waiting)

    @property
    def free_slots(self) -> int:
        return len(self._free)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="wattlm-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float | None = None) -> None:
        """Finish what is running (`timeout_s` at most, then cancel it) and end the loop."""
        with self._cond:
            self.draining = True
            self._cond.notify()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self.in_flight and (deadline is None or time.monotonic() < deadline) and self.alive:
            time.sleep(0.02)
        with self._cond:
            for job in list(self._waiting) + list(self._active.values()):
                job.cancel()
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the engine thread ---------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            last_end: float | None = None  # the end of the previous step, while the loop stays busy
            while True:
                with self._cond:
                    dropped = self._drop_cancelled_waiting()
                    self._admit()
                    if not dropped and (wait := self._gather_wait()) > 0:
                        self._cond.wait(wait)
                        last_end = None  # the wait is idle time, not the next step's
                        continue
                    if not self._active:
                        if self._stopping:
                            break
                        self._cond.wait(self.interval_s)
                        last_end = None
                for job in dropped:
                    self._finish(job, self._done(job, "cancelled", None))
                if dropped:
                    self._after_events()
                if not self._active:
                    self._settle_if_due()
                    continue
                start = last_end if last_end is not None else time.monotonic()
                finished = self._step(start)
                last_end = self._last_end_s = time.monotonic()
                if finished or self._settle_due():
                    self._settle()
                for job, done in finished:
                    self._finish(job, done)
                self._after_events()
        except BaseException as e:  # the loop is dead: every waiting client gets an error, not a hang
            self.error = e
            with self._cond:
                jobs = list(self._waiting) + list(self._active.values())
                self._waiting.clear()
                self._active.clear()
            for job in jobs:
                self._finish(job, self._done(job, "failed", None, error=f"the engine stopped: {e}"))
            self._after_events()
            raise

    def _drop_cancelled_waiting(self) -> list[Job]:
        dropped = [j for j in self._waiting if j.cancelled]
        for job in dropped:
            self._waiting.remove(job)
        return dropped

    def _admit(self) -> None:
        cap = min(self.max_batch, self.sizer.cap)
        while self._waiting and self._free and len(self._active) < cap:
            job = self._waiting.popleft()
            slot = self._place(job)
            job.sampler = Sampler(job.params.temperature, job.params.top_p, job.params.seed)
            job.stream = TextStream(job.params.stop)
            self._active[slot] = job

    def _gather_wait(self) -> float:
        """Seconds to wait for more requests before the next step (0: go now); see GATHER_S."""
        if not self._active or not self._free or len(self._active) >= self._last_batch or self._stopping:
            return 0.0
        if any(j.generated or j.prefilled > j.cached or j.cancelled for j in self._active.values()):
            return 0.0  # someone is mid-work: never hold them up
        first = min(j.arrival_s for j in self._active.values())
        if first - self._last_end_s > GATHER_S:
            return 0.0  # not the returning clients of the last batch
        return max(0.0, first + GATHER_S - time.monotonic())

    def _place(self, job: Job) -> int:
        """Give `job` a free slot, starting after the longest prefix of its prompt that is cached."""
        busy = {slot: _cells(j) for slot, j in self._active.items()} if self.cache.enabled else {}
        where = self.cache.place(job.prompt, self._free, busy)
        self._free.remove(where.slot)
        if self.cache.enabled:
            engine: CachingEngine = self.engine  # type: ignore[assignment]
            if where.copy_from is not None:
                engine.copy(where.copy_from, where.slot)
            engine.keep(where.slot, where.reuse)
        job.slot, job.cached, job.prefilled = where.slot, where.reuse, where.reuse
        return where.slot

    def _step(self, start: float) -> list[tuple[Job, Done]]:
        """One engine call over every active sequence; returns the jobs that ended in it."""
        finished: list[tuple[Job, Done]] = []
        for job in [j for j in self._active.values() if j.cancelled]:
            finished.append((job, self._done(job, "cancelled", None)))
            self._release(job)
        items, work = [], []
        decoding = [j for j in self._active.values() if j.prefilled == len(j.prompt)]
        budget = self.step_tokens - len(decoding)
        if self.schedule == "prefill-first":
            budget = self.prefill_tokens - len(decoding)
        for job in decoding:
            pos = len(job.prompt) + len(job.generated) - 1
            items.append(BatchItem(job.slot, (job.generated[-1],), pos, True))  # type: ignore[arg-type]
            work.append(Work(job.energy, decode_tokens=1, decode_attended=pos + 1))
        for job in sorted((j for j in self._active.values() if j.prefilled < len(j.prompt)), key=lambda j: j.arrival_s):
            if budget <= 0:
                break
            chunk = job.prompt[job.prefilled : job.prefilled + budget]
            start_pos = job.prefilled
            if job.prefill_start_s is None:  # the step may have begun (as the last one ended) before it arrived
                job.prefill_start_s = max(start, job.arrival_s)
            job.prefilled += len(chunk)
            budget -= len(chunk)
            n = len(chunk)
            items.append(BatchItem(job.slot, tuple(chunk), start_pos, job.prefilled == len(job.prompt)))  # type: ignore[arg-type]
            work.append(Work(job.energy, prefill_tokens=n, prefill_attended=n * start_pos + n * (n + 1) // 2))
        if not items:
            return finished
        self._last_batch = len(items)
        rows, failures = self._decode(items)
        now = time.monotonic()
        for item in items:
            job = self._active[item.slot]
            if item.slot in failures:
                finished.append((job, self._done(job, "failed", None, error=failures[item.slot])))
                self._release(job, keep_cells=False)
            elif item.slot in rows:
                done = self._next_token(job, rows[item.slot], now)
                if done is not None:
                    finished.append((job, done))
                    self._release(job)
        self.steps += 1
        if self.attributor is not None:
            self.attributor.step(time.monotonic() - start, work)
        self._on_step(len(items), len(self._waiting))
        return finished

    def _decode(self, items: list[BatchItem]) -> tuple[dict[int, Any], dict[int, str]]:
        """Logits per slot, and the slots whose request failed. When the whole batch fails, each item
        is run alone so one bad request fails alone."""
        try:
            return self.engine.decode(items), {}
        except Exception as e:
            if len(items) == 1:
                return {}, {items[0].slot: str(e)}
        rows, failures = {}, {}
        for item in items:
            try:
                rows.update({s: r.copy() for s, r in self.engine.decode([item]).items()})
            except Exception as e:
                failures[item.slot] = str(e)
        return rows, failures

    def _next_token(self, job: Job, logits: Any, now: float) -> Done | None:
        assert job.sampler is not None and job.stream is not None
        p = job.params
        banned = self.engine.eog_ids if len(job.generated) < p.min_tokens else ()
        token = job.sampler(logits, banned)
        job.generated.append(token)
        if job.first_token_s is None:
            job.first_token_s = now
        eog = token in self.engine.eog_ids
        text = "" if eog else job.stream.add(self.engine.piece(token))
        reason = None
        if job.stream.stopped:
            reason = "stop"
        elif eog and not p.ignore_eos:
            reason = "stop"
        elif len(job.generated) >= p.max_tokens:
            reason = "length"
        if reason is not None and not job.stream.stopped:
            text += job.stream.flush()
        if text:
            job.text.append(text)
        job.emit(Delta(text, 1))
        return self._done(job, "completed", reason) if reason is not None else None

    def _release(self, job: Job, keep_cells: bool = True) -> None:
        """Free the job's slot; its cells stay for the prefix cache unless `keep_cells` is False (a
        failed step may have left them half written)."""
        assert job.slot is not None
        if self.cache.enabled and keep_cells:
            self.cache.hold(job.slot, _cells(job))
        else:
            self.engine.release(job.slot)
            self.cache.forget(job.slot)
        del self._active[job.slot]
        self._free.append(job.slot)
        self._free.sort()

    def _done(self, job: Job, status: str, reason: str | None, error: str = "") -> Done:
        now = time.monotonic()
        ttft = None if job.first_token_s is None else job.first_token_s - job.arrival_s
        timings = None
        if job.first_token_s is not None and job.prefill_start_s is not None:
            timings = {
                "queue_ms": 1000 * (job.prefill_start_s - job.arrival_s),
                "prompt_n": len(job.prompt) - job.cached,
                "cache_n": job.cached,
                "prompt_ms": 1000 * (job.first_token_s - job.prefill_start_s),
                "predicted_n": len(job.generated),
                "predicted_ms": 1000 * (now - job.first_token_s),
            }
        return Done(
            status=status,
            finish_reason=reason,
            prompt_tokens=len(job.prompt),
            completion_tokens=len(job.generated),
            ttft_s=ttft,
            e2e_s=now - job.arrival_s,
            energy=job.energy if self.attributor is not None else None,
            cached_tokens=job.cached,
            text="".join(job.text),
            error=error,
            timings=timings,
        )

    def _finish(self, job: Job, done: Done) -> None:
        job.emit(done)
        self._on_done(job, done)

    # -- energy --------------------------------------------------------------------------------

    def _settle_due(self) -> bool:
        return self.attributor is not None and time.monotonic() - self.attributor.last_read_s >= self.interval_s

    def _settle_if_due(self) -> None:
        if self._settle_due():
            self._settle()

    def _settle(self) -> None:
        if self.attributor is None:
            return
        for step in self.attributor.settle():
            self.sizer.add(step.seqs, step.duration_s, step.energy_j, step.decode_seqs, step.prefill_tokens)


def _cells(job: Job) -> list[int]:
    """The tokens whose cells `job`'s slot holds between steps: the prompt read so far, then every
    generated token but the last (it is fed to the next step)."""
    return job.prompt[: job.prefilled] + job.generated[:-1]
