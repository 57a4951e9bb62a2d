"""`/metrics` for `wattlm serve` (prometheus-client, a registry of the server's own)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

# Request energy in joules: a 135M model's short answer on a CPU costs tens of joules, a long one
# on a big model thousands.
ENERGY_BUCKETS_J = (0.1, 0.3, 1, 3, 10, 30, 100, 300, 1000, 3000, float("inf"))


class ServeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("wattlm_requests", "Requests finished, by status", ["status"], registry=r)
        self.rejected = Counter(
            "wattlm_requests_rejected", "Requests refused before queuing, by HTTP status", ["code"], registry=r
        )
        self.request_energy = Histogram(
            "wattlm_request_energy_joules",
            "Energy charged to each finished request",
            buckets=ENERGY_BUCKETS_J,
            registry=r,
        )
        self.energy = Counter(
            "wattlm_energy_joules", "Metered energy by phase (idle: no active request)", ["phase"], registry=r
        )
        self.tokens = Counter(
            "wattlm_tokens",
            "Tokens of finished requests, by kind (prompt_cached: prompt tokens whose cells were reused, not read)",
            ["kind"],
            registry=r,
        )
        self.prefix_requests = Counter(
            "wattlm_prefix_cache_requests",
            "Finished requests by whether they reused cached prompt cells (hit) or read the whole prompt",
            ["result"],
            registry=r,
        )
        self.batch_size = Gauge("wattlm_batch_size", "Sequences in the last engine step", registry=r)
        self.queue_depth = Gauge("wattlm_queue_depth", "Requests waiting for a slot", registry=r)
        self.batch_cap = Gauge("wattlm_batch_cap", "Most sequences the scheduler lets into one step", registry=r)
        self.batch_cap_reason = Info("wattlm_batch_cap_choice", "Why the batch cap is what it is", registry=r)
        self.step_tpot = Gauge(
            "wattlm_decode_step_seconds", "Mean decode-step duration (TPOT) by batch size", ["batch_size"], registry=r
        )
        self.step_energy = Gauge(
            "wattlm_decode_joules_per_token", "Mean decode energy per token by batch size", ["batch_size"], registry=r
        )
        self.work_model = Gauge(
            "wattlm_work_weight_seconds", "Fitted marginal cost per unit of work", ["kind"], registry=r
        )
        for phase in ("prefill", "decode", "idle"):
            self.energy.labels(phase)
        for status in ("completed", "cancelled", "failed"):
            self.requests.labels(status)
        for kind in ("prompt", "prompt_cached", "completion"):
            self.tokens.labels(kind)
