"""OpenTelemetry spans for `wattlm serve`: one `llm_request` span per finished request, with the
attribute names vLLM uses (`gen_ai.request.id`, `gen_ai.usage.*`, `gen_ai.latency.*`), sent over
OTLP/HTTP, so `wattlm ledger` or any OTel backend reads wattlm serve as it reads vLLM.

Needs the `otel` extra (opentelemetry-sdk, opentelemetry-exporter-otlp-proto-http); spans are
batched and exported from the SDK's own thread, never from the engine loop."""

from __future__ import annotations

import socket
import time
from typing import Any

from ..otel import require_sdk, signal_url


class SpanEmitter:
    def __init__(self, endpoint: str, model: str) -> None:
        require_sdk("--otlp-traces-endpoint")
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace import SpanKind

        url = signal_url(endpoint, "traces")
        resource = Resource.create({"service.name": "wattlm-serve", "host.name": socket.gethostname()})
        self._provider = TracerProvider(resource=resource)
        self._provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=url), schedule_delay_millis=1000)
        )
        self._tracer = self._provider.get_tracer("wattlm.serve")
        self._kind = SpanKind.SERVER
        self.model = model
        self.url = url

    def request(self, rid: str, arrival_mono_s: float, done: Any) -> None:
        """One finished request (`done` is the scheduler's Done) as a span from arrival to now."""
        now_wall, now_mono = time.time(), time.monotonic()
        start_ns = int((now_wall - (now_mono - arrival_mono_s)) * 1e9)
        attrs: dict[str, Any] = {
            "gen_ai.request.id": rid,
            "gen_ai.response.model": self.model,
            "gen_ai.usage.prompt_tokens": done.prompt_tokens,
            "gen_ai.usage.completion_tokens": done.completion_tokens,
            "gen_ai.usage.cached_tokens": done.cached_tokens,  # served from the prefix cache, not read
            "gen_ai.latency.e2e": done.e2e_s,
        }
        if done.ttft_s is not None:
            attrs["gen_ai.latency.time_to_first_token"] = done.ttft_s
        t = done.timings
        if t is not None:
            attrs["gen_ai.latency.time_in_queue"] = t["queue_ms"] / 1000
            attrs["gen_ai.latency.time_in_model_prefill"] = t["prompt_ms"] / 1000
            attrs["gen_ai.latency.time_in_model_decode"] = t["predicted_ms"] / 1000
        span = self._tracer.start_span("llm_request", kind=self._kind, attributes=attrs, start_time=start_ns)
        span.end(end_time=int(now_wall * 1e9))

    def close(self) -> None:
        self._provider.force_flush(5000)
        self._provider.shutdown()
