"""Timings a server puts in its answers, normalised: where its queueing ended and prompt reading
began, how long prompt reading and decoding took, and how much of the prompt came from its cache.

    llama.cpp's server  "timings": {prompt_n, prompt_ms, cache_n, predicted_n, predicted_ms}
                        (the last streamed chunk, or the whole answer)
    wattlm serve        the same "timings" object, plus queue_ms
    Ollama              prompt_eval_count, prompt_eval_duration, eval_count, eval_duration (ns)
    TGI                 headers x-queue-time, x-inference-time (ms)

A client only sees when the first token arrived; these say where, before it, the server was
reading the prompt, so the prompt's energy is placed there and not over the queueing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ServerTimings:
    source: str  # llama.cpp | wattlm | ollama | tgi
    prompt_s: float | None = None  # prompt reading, ending at the first token
    queue_s: float | None = None  # arrival to the start of prompt reading
    decode_s: float | None = None
    prompt_tokens: int | None = None  # tokens actually read (the cache's left out)
    cached_tokens: int | None = None
    decode_tokens: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def _num(d: Mapping[str, Any], key: str) -> float | None:
    v = d.get(key)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 else None


def from_body(event: Mapping[str, Any]) -> ServerTimings | None:
    """Timings in one JSON answer or stream event, or None."""
    t = event.get("timings")
    if isinstance(t, Mapping) and ("prompt_ms" in t or "predicted_ms" in t):
        ms = lambda k: None if (v := _num(t, k)) is None else v / 1000.0  # noqa: E731
        count = lambda k: None if (v := _num(t, k)) is None else int(v)  # noqa: E731
        return ServerTimings(
            "wattlm" if "queue_ms" in t else "llama.cpp",
            prompt_s=ms("prompt_ms"),
            queue_s=ms("queue_ms"),
            decode_s=ms("predicted_ms"),
            prompt_tokens=count("prompt_n"),
            cached_tokens=count("cache_n"),
            decode_tokens=count("predicted_n"),
        )
    if "prompt_eval_duration" in event or "eval_duration" in event:
        ns = lambda k: None if (v := _num(event, k)) is None else v / 1e9  # noqa: E731
        n = _num(event, "prompt_eval_count")
        e = _num(event, "eval_count")
        return ServerTimings(
            "ollama",
            prompt_s=ns("prompt_eval_duration"),
            decode_s=ns("eval_duration"),
            prompt_tokens=None if n is None else int(n),
            decode_tokens=None if e is None else int(e),
        )
    return None


def from_headers(headers: Mapping[str, str]) -> ServerTimings | None:
    """TGI's timing headers, or None."""
    try:
        queue = headers.get("x-queue-time")
        inference = headers.get("x-inference-time")
        if queue is None and inference is None:
            return None
        return ServerTimings(
            "tgi",
            queue_s=None if queue is None else float(queue) / 1000.0,
            decode_s=None,
            prompt_s=None,
        )
    except ValueError:
        return None
