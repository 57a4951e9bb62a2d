"""Spans shaped exactly as vLLM's `llm_request` (vllm/v1/engine/output_processor.py, do_tracing), sent
with the real OpenTelemetry SDK and OTLP/HTTP exporter: vLLM itself needs a GPU."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Request:
    id: str
    arrival_s: float  # wall clock
    queue_s: float
    prefill_s: float
    decode_s: float
    prompt_tokens: int
    completion_tokens: int
    tenant: str = "acme"

    @property
    def ttft_s(self) -> float:
        return self.queue_s + self.prefill_s

    @property
    def end_s(self) -> float:
        return self.arrival_s + self.ttft_s + self.decode_s


def attributes(r: Request, model: str = "meta-llama/Llama-3.1-8B-Instruct") -> dict:
    return {
        "gen_ai.response.model": model,
        "gen_ai.request.id": r.id,
        "gen_ai.request.max_tokens": r.completion_tokens,
        "gen_ai.usage.prompt_tokens": r.prompt_tokens,
        "gen_ai.usage.completion_tokens": r.completion_tokens,
        "gen_ai.latency.time_in_queue": r.queue_s,
        "gen_ai.latency.time_to_first_token": r.ttft_s,
        "gen_ai.latency.e2e": r.end_s - r.arrival_s + 0.002,
        "gen_ai.latency.time_in_model_prefill": r.prefill_s,
        "gen_ai.latency.time_in_model_decode": r.decode_s,
        "gen_ai.latency.time_in_model_inference": r.prefill_s + r.decode_s,
        "tenant": r.tenant,
    }


def send(endpoint: str, host_name: str, requests: list[Request], *, headers=None) -> None:
    """Export the requests' spans from a `host.name` resource, as a vLLM replica would, and flush."""
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import SpanKind

    provider = TracerProvider(resource=Resource.create({"service.name": "vllm", "host.name": host_name}))
    exporter = OTLPSpanExporter(endpoint=endpoint, headers=headers, compression=Compression.NoCompression)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("vllm.llm_engine")
    for r in requests:
        span = tracer.start_span(
            "llm_request", kind=SpanKind.SERVER, attributes=attributes(r), start_time=int(r.arrival_s * 1e9)
        )
        span.end(end_time=int((r.end_s + 0.002) * 1e9))
    provider.force_flush()
    provider.shutdown()
