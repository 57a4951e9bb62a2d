"""One load level: warm-up, a measured window, then the drain — as one asyncio task tree.

    |-- warm-up (warmup_s) --|==== measured window (duration_s, or until N requests finish) ====|-- drain --|
                             begin_window                                                end_window

Requests go out on the arrival schedule (rate levels) or from C closed-loop clients (concurrency
levels) from the start of the warm-up until the window ends; requests sent inside the window are
the measured ones, and the drain waits (at most the request timeout) for those still streaming.
The window itself ends on time, so its energy covers exactly its seconds.

A steady window (`window="steady"`, closed loop, N requests a level), as the ML.ENERGY benchmark
measures: no warm-up; C clients share the N requests; the window opens the moment every client has a
request in flight and the server streams to all of them (or to `server_batch`, when the server runs
fewer sequences than there are clients) and closes the moment the first client runs out of work.
All N requests are the level's requests (their latencies count); the energy and the token rate are the
window's. A level whose batch never filled says so and is not measured.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .client import Endpoint, RequestRecord, send
from .prompts import Prompt
from .schedule import arrival_offsets_s

DEAD_AFTER = 8  # consecutive connection failures with no success: the server is gone


@dataclass
class LevelPlan:
    index: int
    mode: str  # rate | concurrency
    value: float
    warmup_s: float
    duration_s: float
    requests: int | None
    timeout_s: float
    arrival: str = "poisson"
    burstiness: float = 1.0
    seed: int = 0
    window: str = "fixed"  # fixed | steady
    server_batch: int | None = None  # steady: sequences the server runs at once, when fewer than the clients


@dataclass
class LevelRun:
    """What the level did; the window's times are monotonic seconds."""

    records: list[RequestRecord] = field(default_factory=list)
    window_start_s: float = 0.0
    window_end_s: float = 0.0
    cpu_s: float = 0.0  # this process's CPU time inside the window
    stopped: str = ""  # why the level ended early: the server died, SIGINT
    window: str = "fixed"
    most_streaming: int = 0  # steady: the most requests streamed to at once


class Level:
    """`await Level(...)()` runs the level; `begin()` and `end(reason)` open and close the energy
    window (in a thread, so streams keep flowing while counters are read)."""

    def __init__(
        self,
        plan: LevelPlan,
        endpoint: Endpoint,
        prompts: list[Prompt],
        client: Any,
        begin: Callable[[], None],
        end: Callable[[str], None],
        interrupted: asyncio.Event,
        on_tick: Callable[[dict[str, Any]], None] | None,
    ) -> None:
        self.plan, self.endpoint, self.client = plan, endpoint, client
        self.prompts = itertools.cycle(prompts[plan.index % len(prompts) :] + prompts[: plan.index % len(prompts)])
        self.begin, self.end, self.on_tick = begin, end, on_tick
        self.interrupted = interrupted
        self.run = LevelRun()
        self.measuring = False
        self.sending = True
        self.enough = asyncio.Event()  # --requests N: N measured requests have been sent
        self.dead = asyncio.Event()
        self.failures_in_row = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.measured_tasks: set[asyncio.Task[None]] = set()
        self.measured_sent = 0  # requests sent inside the window (every turn counts)
        self.conversations = itertools.count()
        self.out_of_work = asyncio.Event()  # steady: the first client found no request left

    async def _one(self, record: RequestRecord, prompt: Prompt) -> None:
        await send(self.client, self.endpoint, prompt, record, self.plan.timeout_s)
        if record.ok:
            self.failures_in_row = 0
        elif record.error is not None and record.error.startswith("connection"):
            self.failures_in_row += 1
            if self.failures_in_row >= DEAD_AFTER:
                self.dead.set()

    async def _conversation(self, record: RequestRecord, prompt: Prompt) -> None:
        """The prompt's turns, one after another while the level is sending and each one succeeds."""
        await self._one(record, prompt)
        for turn in range(2, prompt.turns + 1):
            if not (record.ok and self.sending) or self.dead.is_set():
                return
            prompt = prompt.next_turn("".join(record.answer or ()), turn)
            record = self._record(prompt, None, record.conversation, turn)
            if record.measured and (task := asyncio.current_task()) is not None:
                self.measured_tasks.add(task)  # a conversation begun in the warm-up: the drain waits for it
            await self._one(record, prompt)

    def _record(self, prompt: Prompt, scheduled_s: float | None, conversation: int | None, turn: int) -> RequestRecord:
        record = RequestRecord(self.plan.index, self.measuring, prompt.max_tokens, scheduled_s=scheduled_s)
        if prompt.turns > 1:
            record.conversation, record.turn = conversation, turn
            record.answer = [] if turn < prompt.turns else None
        self.run.records.append(record)
        if self.measuring:
            self.measured_sent += 1
            if self.plan.requests is not None and self.measured_sent >= self.plan.requests:
                self.sending = False
                self.enough.set()
        return record

    def _launch(self, scheduled_s: float | None) -> asyncio.Task[None]:
        prompt = next(self.prompts)
        measuring = self.measuring
        record = self._record(prompt, scheduled_s, next(self.conversations), 1)
        task = asyncio.create_task(self._conversation(record, prompt))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        if measuring:
            self.measured_tasks.add(task)  # never emptied: the drain waits on them
        return task

    async def _open_loop(self, start_s: float) -> None:
        p = self.plan
        for offset in arrival_offsets_s(p.value, p.arrival, p.burstiness, p.seed + p.index):
            delay = start_s + offset - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if not self.sending:
                return
            self._launch(start_s + offset)

    async def _closed_loop_client(self) -> None:
        while self.sending and not self.dead.is_set():
            await self._launch(None)
        self.out_of_work.set()

    def _streaming(self) -> int:
        """Requests in flight that have received a token."""
        return sum(1 for r in self.run.records if r.end_s is None and r.error is None and r.token_times_s)

    async def _steady(self) -> None:
        """Open the window once the batch is full, close it when the first client runs out of work."""
        p = self.plan
        full = min(int(p.value), p.server_batch or int(p.value))
        deadline = time.monotonic() + p.timeout_s * max(1, p.requests or 1)
        while not self.out_of_work.is_set() and not self._why_stopped():
            streaming = self._streaming()
            self.run.most_streaming = max(self.run.most_streaming, streaming)
            if streaming >= full:
                break
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.005)
        if self.out_of_work.is_set() or self._why_stopped() or self._streaming() < full:
            self.run.stopped = self._why_stopped() or (
                f"the batch never filled: at most {self.run.most_streaming} of {full} requests streamed at once"
                " before the first client ran out of work (give more requests, or --server-batch with the"
                " sequences the server runs at once)"
            )
            self.run.window_start_s = self.run.window_end_s = time.monotonic()
            return
        await asyncio.to_thread(self.begin)
        self.run.window_start_s, cpu0 = time.monotonic(), time.process_time()
        await self._until(deadline, self.out_of_work)
        self.run.window_end_s, self.run.cpu_s = time.monotonic(), time.process_time() - cpu0
        self.run.stopped = self._why_stopped()
        await asyncio.to_thread(self.end, self.run.stopped)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            if self.on_tick is not None:
                now = time.monotonic()
                recent = sum(1 for r in self.run.records for t in r.token_times_s[-64:] if now - t <= 1.0)
                self.on_tick(
                    {
                        "level": self.plan.index,
                        "phase": "measuring" if self.measuring else ("warm-up" if self.sending else "drain"),
                        "in_flight": len(self.tasks),
                        "tokens_per_s": recent,
                        "done": sum(1 for r in self.run.records if r.measured and r.end_s is not None),
                    }
                )

    async def _until(self, deadline_s: float, *events: asyncio.Event) -> None:
        """Sleep until the deadline or until any of the events is set."""
        waits = [asyncio.create_task(e.wait()) for e in (*events, self.interrupted, self.dead)]
        try:
            await asyncio.wait(waits, timeout=max(0.0, deadline_s - time.monotonic()), return_when="FIRST_COMPLETED")
        finally:
            for w in waits:
                w.cancel()

    def _why_stopped(self) -> str:
        if self.interrupted.is_set():
            return "interrupted (SIGINT)"
        if self.dead.is_set():
            return f"the server stopped answering ({DEAD_AFTER} connection failures in a row)"
        return ""

    async def __call__(self) -> LevelRun:
        p = self.plan
        self.run.window = p.window
        if p.window == "steady":
            self.measuring = True  # every request of the level is measured; the energy is the window's
        start_s = time.monotonic()
        drivers = (
            [asyncio.create_task(self._open_loop(start_s))]
            if p.mode == "rate"
            else [asyncio.create_task(self._closed_loop_client()) for _ in range(int(p.value))]
        )
        ticker = asyncio.create_task(self._ticker())
        try:
            if p.window == "steady":
                await self._steady()
                self.sending = False
                if not (self.interrupted.is_set() or self.dead.is_set()):  # the level's requests may finish
                    await self._wait(list(self.measured_tasks), time.monotonic() + p.timeout_s)
                return self.run
            await self._until(start_s + p.warmup_s)
            if not self._why_stopped():
                await asyncio.to_thread(self.begin)
                self.run.window_start_s, cpu0 = time.monotonic(), time.process_time()
                self.measuring = True
                if p.requests is None:
                    await self._until(self.run.window_start_s + p.duration_s)
                else:  # the window lasts until the N measured requests have finished
                    await self._until(self.run.window_start_s + p.duration_s + p.timeout_s, self.enough)
                    self.measuring = False
                    drain = list(self.measured_tasks)
                    if drain and not self._why_stopped():
                        await self._wait(drain, self.run.window_start_s + p.duration_s + p.timeout_s)
                self.measuring, self.sending = False, False
                self.run.window_end_s, self.run.cpu_s = time.monotonic(), time.process_time() - cpu0
                self.run.stopped = self._why_stopped()
                await asyncio.to_thread(self.end, self.run.stopped)
            else:
                self.run.stopped = self._why_stopped()
            self.sending = False
            if not self.run.stopped:  # drain: the measured requests still streaming may finish
                await self._wait(list(self.measured_tasks), time.monotonic() + p.timeout_s)
                if self.interrupted.is_set():
                    self.run.stopped = "interrupted (SIGINT) during the drain: some latencies are missing"
        finally:
            self.sending = False
            for task in [*drivers, ticker, *self.tasks]:
                task.cancel()
            await asyncio.gather(*drivers, ticker, *self.tasks, return_exceptions=True)
            for r in self.run.records:
                if r.error is None and r.end_s is None:
                    r.error = "unfinished when the level ended"
        return self.run

    async def _wait(self, tasks: list[asyncio.Task[None]], deadline_s: float) -> None:
        """Until every task is done, or the deadline, SIGINT or a dead server comes first."""
        stop = asyncio.create_task(self._until(deadline_s))
        while not stop.done() and (pending := [t for t in tasks if not t.done()]):
            await asyncio.wait([*pending, stop], return_when="FIRST_COMPLETED")
        stop.cancel()
