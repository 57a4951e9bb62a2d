"""From a server's request span to a timeline, one small table per attribute naming.

vLLM (`--otlp-traces-endpoint`, span `llm_request`, checked against the source of vLLM's v1 output
processor) and SGLang (its request time stats' `convert_to_gen_ai_span_attrs`) both use the `gen_ai.*`
names below, in seconds; `wattlm serve --otlp-traces-endpoint` sends the same. The span starts at the
request's arrival. Where an engine names a field otherwise, add its names to the tuple.

    arrival          span start
    first token      arrival + gen_ai.latency.time_to_first_token
    prompt reading   [first token − time_in_model_prefill, first token]  (else from arrival + time_in_queue,
                     else from arrival)
    end              first token + time_in_model_decode  (else arrival + e2e, else span end)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..attribution.timeline import Timeline
from .otlp import SpanData

NAMES: dict[str, tuple[str, ...]] = {
    "id": ("gen_ai.request.id", "gen_ai.response.id"),
    "model": ("gen_ai.response.model", "gen_ai.request.model"),
    "prompt_tokens": ("gen_ai.usage.prompt_tokens", "gen_ai.usage.input_tokens"),
    "output_tokens": ("gen_ai.usage.completion_tokens", "gen_ai.usage.output_tokens"),
    "cached_tokens": (
        "gen_ai.usage.cached_tokens",
        "gen_ai.usage.num_cached_tokens",
        "gen_ai.usage.cache_read_input_tokens",
    ),
    "queue_s": ("gen_ai.latency.time_in_queue",),
    "ttft_s": ("gen_ai.latency.time_to_first_token",),
    "e2e_s": ("gen_ai.latency.e2e",),
    "prefill_s": ("gen_ai.latency.time_in_model_prefill",),
    "decode_s": ("gen_ai.latency.time_in_model_decode",),
}
HOST_KEYS = ("host.name", "service.instance.id")


def _get(span: SpanData, field: str) -> Any:
    for name in NAMES[field]:
        if name in span.attributes:
            return span.attributes[name]
    return None


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        x = float(value)
    except ValueError:
        return None
    return x if x >= 0 and x == x and x != float("inf") else None


def is_request(span: SpanData) -> bool:
    """A span of one LLM request (vLLM's llm_request and its kin), not an HTTP or router span."""
    return any(n in span.attributes for n in NAMES["prompt_tokens"] + NAMES["output_tokens"])


def host_of(span: SpanData) -> str:
    for key in HOST_KEYS:
        if span.resource.get(key):
            return str(span.resource[key])
    return ""


@dataclass(frozen=True)
class Mapped:
    timeline: Timeline | None
    reason: str  # why there is no timeline; a short code first: "code: words"
    model: str
    labels: dict[str, str]


def label_value(span: SpanData, key: str) -> str | None:
    value = span.attributes.get(key, span.resource.get(key))
    return None if value is None else str(value)


def to_timeline(span: SpanData, group_by: str | None = None) -> Mapped:
    rid = _get(span, "id")
    rid = str(rid) if rid not in (None, "") else f"span:{span.span_id}"
    model = str(_get(span, "model") or span.resource.get("service.name") or "")
    labels = {} if group_by is None else {group_by: label_value(span, group_by) or ""}
    prompt, output = _num(_get(span, "prompt_tokens")), _num(_get(span, "output_tokens"))
    ttft = _num(_get(span, "ttft_s"))

    def no(reason: str) -> Mapped:
        return Mapped(None, reason, model, labels)

    if prompt is None or output is None:
        return no("no_tokens: the span carries no prompt or completion token count")
    if ttft is None:
        return no("no_times: the span carries no time to first token")
    arrival = span.start_ns / 1e9
    first = arrival + ttft
    prefill, queue, decode, e2e = (_num(_get(span, k)) for k in ("prefill_s", "queue_s", "decode_s", "e2e_s"))
    if prefill is not None:
        start: float | None = max(arrival, first - prefill)
    elif queue is not None:
        start = min(first, arrival + queue)
    else:
        start = None
    if decode is not None:
        end = first + decode
    elif e2e is not None:
        end = arrival + e2e
    else:
        end = span.end_ns / 1e9
    cached = _num(_get(span, "cached_tokens"))
    t = Timeline(
        id=rid,
        arrival_s=arrival,
        first_token_s=first,
        end_s=max(end, first),
        prompt_tokens=int(prompt),
        output_tokens=int(output),
        cached_tokens=min(int(cached or 0), int(prompt)),
        prefill_start_s=start,
        host=host_of(span),
        source="spans",
    )
    if why := t.problems():
        return no(f"bad_times: {why}")
    return Mapped(t, "", model, labels)
