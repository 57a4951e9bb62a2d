"""The server's state, between HTTP (app.py) and the engine loop (scheduler.py): it turns requests
into jobs, keeps the meter running for the server's life, and writes each finished request to the
ledger and the metrics."""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .. import __version__
from ..attribution.steps import Attributor
from ..energy.meter import EnergyMeter
from ..jsonlog import Ledger
from .config import DEFAULT_LEDGER, ServeConfig
from .load import Loaded
from .metrics import ServeMetrics
from .protocol import BadRequest, Params
from .scheduler import Delta, Done, Job, Scheduler
from .slo import BatchSizer

WINDOW = "wattlm:serve"


class Service:
    def __init__(self, config: ServeConfig, *, meter: EnergyMeter | None = None, ledger_path: str | None = None):
        self.config = config
        self.state = "loading"  # loading → ready → draining → stopped; or failed
        self.failure = ""
        self.metrics = ServeMetrics()
        self.meter = meter
        self.ledger = Ledger(ledger_path or config.ledger or DEFAULT_LEDGER)
        self.loaded: Loaded | None = None
        self.scheduler: Scheduler | None = None
        self.attributor: Attributor | None = None
        self.sizer = BatchSizer(config.max_batch, config.slo_tpot_s)
        self.started = time.time()
        self._ids = itertools.count(1)
        self._exported = {"prefill": 0.0, "decode": 0.0, "idle": 0.0}
        self._lock = threading.Lock()
        self.after_events: Callable[[], None] = lambda: None  # the HTTP side's hook: deliver what a step emitted
        self.spans: Any = None  # a SpanEmitter, with config.otlp_traces_endpoint

    # -- life ----------------------------------------------------------------------------------

    def start(self, loaded: Loaded) -> None:
        """Start metering and the engine loop around an engine that is loaded."""
        self.loaded = loaded
        if self.config.otlp_traces_endpoint:
            from .tracing import SpanEmitter

            self.spans = SpanEmitter(self.config.otlp_traces_endpoint, loaded.name)
        if self.meter is None:
            self.meter = EnergyMeter(interval_s=self.config.interval_s)
        self.meter.begin_window(WINDOW)
        if self.config.attribution:
            self.attributor = Attributor(self.meter.read_it_j)
        self.scheduler = Scheduler(
            loaded.engine,
            max_batch=self.config.max_batch,
            max_queue=self.config.max_queue,
            step_tokens=self.config.step_tokens,
            attributor=self.attributor,
            sizer=self.sizer,
            interval_s=self.config.interval_s,
            schedule=self.config.resolved_schedule,
            prefill_tokens=self.config.prefill_tokens,
            prefix_cache=self.config.prefix_cache,
            on_done=self._record,
            on_step=self._on_step,
            after_events=lambda: self.after_events(),
        )
        self.scheduler.start()
        self.state = "ready"

    def fail(self, message: str) -> None:
        self.state, self.failure = "failed", message

    def drain(self, timeout_s: float) -> None:
        """Refuse new requests, let running ones finish (cancel what is left after `timeout_s`)."""
        if self.state == "ready":
            self.state = "draining"
        if self.scheduler is not None:
            self.scheduler.stop(timeout_s)

    def close(self) -> None:
        if self.scheduler is not None and self.scheduler.alive:
            self.scheduler.stop(0)
        if self.attributor is not None:
            self.attributor.settle()
        self.ledger.close()
        if self.spans is not None:
            self.spans.close()
        if self.meter is not None and self.loaded is not None:
            self.meter.end_window(WINDOW)
            self.meter.close()
        if self.loaded is not None:
            self.loaded.close()
        self.state = "stopped"

    # -- requests ------------------------------------------------------------------------------

    def job(self, prompt: list[int], params: Params, emit: Callable[[Delta | Done], None], endpoint: str) -> Job:
        """A job for `prompt`, checked against the context; the caller submits it."""
        assert self.loaded is not None
        if not prompt:
            raise BadRequest("the prompt is empty: give at least one token of text", param="prompt")
        if len(prompt) > self.config.max_prompt_tokens:
            raise BadRequest(
                f"the prompt is {len(prompt)} tokens, over this server's limit of {self.config.max_prompt_tokens};"
                " shorten it",
                param="messages" if endpoint == "chat" else "prompt",
            )
        try:
            self.loaded.engine.check_ids(prompt)
        except ValueError as e:
            raise BadRequest(str(e), param="prompt") from None
        prefix = "chatcmpl" if endpoint == "chat" else "cmpl"
        return Job(f"{prefix}-{next(self._ids)}-{secrets.token_hex(4)}", prompt, params, emit, endpoint)

    def energy_of(self, done: Done) -> dict[str, Any] | None:
        if done.energy is None or self.meter is None:
            return None
        return {
            "total_j": done.energy.total_j,
            "prefill_j": done.energy.prefill_j,
            "decode_j": done.energy.decode_j,
            "provenance": self.meter.provenance,
        }

    def _record(self, job: Job, done: Done) -> None:
        energy = self.energy_of(done)
        arrival = time.time() - (time.monotonic() - job.arrival_s)
        self.ledger.write(
            {
                "id": job.id,
                "endpoint": job.endpoint,
                "arrival": datetime.fromtimestamp(arrival, UTC).isoformat(timespec="milliseconds"),
                "status": done.status,
                "finish_reason": done.finish_reason,
                "prompt_tokens": done.prompt_tokens,
                "cached_tokens": done.cached_tokens,
                "completion_tokens": done.completion_tokens,
                "ttft_s": done.ttft_s,
                "e2e_s": done.e2e_s,
                "timings": done.timings,
                "energy": energy,
                **({"error": done.error} if done.error else {}),
            }
        )
        if self.spans is not None and done.status == "completed":
            self.spans.request(job.id, job.arrival_s, done)
        m = self.metrics
        m.requests.labels(done.status).inc()
        m.tokens.labels("prompt").inc(done.prompt_tokens)
        m.tokens.labels("prompt_cached").inc(done.cached_tokens)
        if self.scheduler is not None and self.scheduler.cache.enabled:
            m.prefix_requests.labels("hit" if done.cached_tokens else "miss").inc()
        m.tokens.labels("completion").inc(done.completion_tokens)
        if energy is not None:
            m.request_energy.observe(energy["total_j"])

    def _on_step(self, batch: int, queued: int) -> None:
        self.metrics.batch_size.set(batch)
        self.metrics.queue_depth.set(queued)

    # -- what /metrics, /health and /stats show -------------------------------------------------

    def sync_metrics(self) -> None:
        """Bring the counters read from the engine thread's totals up to date (at scrape time)."""
        m, a = self.metrics, self.attributor
        with self._lock:
            if a is not None:
                for phase, total in a.totals().items():
                    if phase not in self._exported:
                        continue
                    if total > self._exported[phase]:
                        m.energy.labels(phase).inc(total - self._exported[phase])
                        self._exported[phase] = total
                for kind, value in (("prompt_token", a.model.a), ("decode_token", a.model.b), ("attended", a.model.c)):
                    m.work_model.labels(kind).set(value)
        if self.scheduler is not None:
            m.queue_depth.set(self.scheduler.queued)
        m.batch_cap.set(self.sizer.cap)
        m.batch_cap_reason.info({"reason": self.sizer.reason})
        for row in self.sizer.table():
            m.step_tpot.labels(str(row["batch_size"])).set(row["tpot_s"])
            m.step_energy.labels(str(row["batch_size"])).set(row["j_per_token"])

    def current_state(self) -> str:
        """The state, noticing an engine loop that has died since it was last asked."""
        s = self.scheduler
        if self.state == "ready" and s is not None and not s.alive:
            self.fail(f"the engine loop stopped: {s.error}")
        return self.state

    def health(self) -> dict[str, Any]:
        s = self.scheduler
        out: dict[str, Any] = {"status": self.current_state(), "version": __version__}
        if self.failure:
            out["error"] = self.failure
        if self.loaded is not None:
            out |= {
                "model": self.loaded.name,
                "engine": self.loaded.engine.engine,
                "batching": self.loaded.engine.batching,
                "source": self.loaded.source,
                "chat_template": self.loaded.chat is not None,
            }
        if s is not None:
            out |= {"slots": self.config.max_batch, "slots_free": s.free_slots, "in_flight": s.in_flight}
        if self.meter is not None:
            out["energy"] = {
                "provenance": self.meter.provenance,
                "channels": [c.label for c in self.meter.channels.values()],
                "attribution": self.config.attribution,
            }
        return out

    def stats(self) -> dict[str, Any]:
        a = self.attributor
        out: dict[str, Any] = {
            "batch_cap": self.sizer.cap,
            "batch_cap_reason": self.sizer.reason,
            "batch_sizes": self.sizer.table(),
        }
        if a is not None:
            out["energy_j"] = a.totals()
            out["work_model"] = a.model.to_dict()
        if self.scheduler is not None:
            out["steps"] = self.scheduler.steps
            out["schedule"] = self.scheduler.schedule
            out["prefix_cache"] = self.scheduler.cache.stats()
        return out
