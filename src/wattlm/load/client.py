"""One request to an OpenAI-compatible server, streamed, with the arrival time of every token.

A request never raises: what went wrong (HTTP status, timeout, a broken connection, an error event
inside the stream) is recorded in `RequestRecord.error`, so a level counts its failures instead of
losing them.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from .prompts import Prompt
from .timings import ServerTimings, from_body, from_headers


@dataclass
class RequestRecord:
    level: int
    measured: bool  # sent inside the measured window (not warm-up, not drain)
    asked_tokens: int
    scheduled_s: float | None = None  # the arrival schedule's send time (rate levels)
    sent_s: float = 0.0
    end_s: float | None = None
    token_times_s: list[float] = field(default_factory=list)  # arrival of each content chunk
    usage_completion_tokens: int | None = None
    usage_prompt_tokens: int | None = None
    finish_reason: str | None = None
    error: str | None = None  # None: completed
    streamed: bool = True  # False: one whole answer, so no token arrival times
    response_id: str | None = None  # the server's id of the answer
    usage_cached_tokens: int | None = None  # usage.prompt_tokens_details.cached_tokens, where given
    timings: ServerTimings | None = None  # what the server says of its own timing
    conversation: int | None = None  # which conversation of the level, for multi-turn prompts
    turn: int = 1
    answer: list[str] | None = None  # the answer's text, kept where a next turn needs it

    @property
    def ok(self) -> bool:
        return self.error is None and self.end_s is not None

    @property
    def output_tokens(self) -> int:
        """From the server's usage where it reported it, else the content chunks of the stream."""
        if self.usage_completion_tokens is not None:
            return self.usage_completion_tokens
        return len(self.token_times_s)

    @property
    def tokens_source(self) -> str:
        return "usage" if self.usage_completion_tokens is not None else "stream"

    @property
    def truncated(self) -> bool:
        """Fewer tokens than asked: the server stopped early (EOS it would not ignore, a cut stream)."""
        return self.ok and self.output_tokens < self.asked_tokens


@dataclass(frozen=True)
class Endpoint:
    """Where and how to send: the probe fills it in (which length-pinning fields the server takes)."""

    url: str  # base URL, e.g. http://127.0.0.1:8000/v1
    model: str
    api: str  # chat | completions
    stream: bool = True
    pins: tuple[str, ...] = ()  # length-pinning fields the server takes: "ignore_eos", "min_tokens"
    usage_in_stream: bool = True  # send stream_options.include_usage

    @property
    def path(self) -> str:
        return "/chat/completions" if self.api == "chat" else "/completions"

    def body(self, prompt: Prompt) -> dict[str, Any]:
        tokens = prompt.max_tokens
        body: dict[str, Any] = {"model": self.model, "max_tokens": tokens, "stream": self.stream}
        if self.api == "chat":
            body["messages"] = list(prompt.messages)
        else:
            body["prompt"] = prompt.text()
        if self.stream and self.usage_in_stream:
            body["stream_options"] = {"include_usage": True}
        if "ignore_eos" in self.pins:
            body["ignore_eos"] = True
        if "min_tokens" in self.pins:
            body["min_tokens"] = tokens
        return body


def _content(event: dict[str, Any]) -> str:
    choices = event.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return ""
    choice = choices[0]
    delta = choice.get("delta") or choice.get("message")  # streamed chunk, or a whole answer
    if isinstance(delta, dict):
        return str(delta.get("content") or delta.get("reasoning_content") or "")
    return str(choice.get("text") or "")


def _absorb(record: RequestRecord, event: dict[str, Any], now: float) -> None:
    if "error" in event and not event.get("choices"):
        err = event["error"]
        record.error = f"error in stream: {err.get('message', err) if isinstance(err, dict) else err}"
        return
    if content := _content(event):
        record.token_times_s.append(now)
        if record.answer is not None:
            record.answer.append(content)
    if record.response_id is None and isinstance(event.get("id"), str):
        record.response_id = event["id"]
    if (timings := from_body(event)) is not None:
        record.timings = timings
    choices = event.get("choices") or []
    if choices and isinstance(choices[0], dict) and choices[0].get("finish_reason"):
        record.finish_reason = str(choices[0]["finish_reason"])
    usage = event.get("usage")
    if isinstance(usage, dict) and usage.get("completion_tokens") is not None:
        record.usage_completion_tokens = int(usage["completion_tokens"])
        if usage.get("prompt_tokens") is not None:
            record.usage_prompt_tokens = int(usage["prompt_tokens"])
        details = usage.get("prompt_tokens_details")
        if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
            record.usage_cached_tokens = int(details["cached_tokens"])


def session() -> Any:
    """The HTTP client of a load run: aiohttp, with no cap on connections (the load level is the cap).

    aiohttp rather than httpx: streaming one token costs it about half the CPU time (measured at
    91 µs against 196 µs per streamed token on a 2-vCPU VM), and the generator's own cost is part of
    what `wattlm load` must keep small on a machine it shares with the server."""
    import aiohttp

    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None))


async def send(client: Any, endpoint: Endpoint, prompt: Prompt, record: RequestRecord, timeout_s: float) -> None:
    """Send one request and fill `record` in; bounded by `timeout_s` from start to last byte."""
    import aiohttp

    record.sent_s = time.monotonic()
    record.streamed = endpoint.stream
    try:
        async with asyncio.timeout(timeout_s):
            await _exchange(client, endpoint, prompt, record)
    except TimeoutError:
        record.error = "timeout"
    except aiohttp.ClientError as e:
        record.error = f"connection: {type(e).__name__}"
    except (json.JSONDecodeError, ValueError, KeyError, TypeError) as e:
        record.error = f"not an OpenAI response: {type(e).__name__}"
    if record.error is None:
        record.end_s = time.monotonic()


async def _exchange(client: Any, endpoint: Endpoint, prompt: Prompt, record: RequestRecord) -> None:
    url = endpoint.url.rstrip("/") + endpoint.path
    body = endpoint.body(prompt)
    async with client.post(url, json=body) as response:
        if response.status != 200:
            await response.read()
            record.error = f"HTTP {response.status}"
            return
        record.timings = from_headers(response.headers)
        if not endpoint.stream:
            data = json.loads(await response.read())
            _absorb(record, data, time.monotonic())
            if data.get("usage") is None and _content(data):
                record.error = "the server reported no usage, so the tokens of a request without streaming are unknown"
            return
        async for raw in response.content:  # one SSE line at a time
            if not raw.startswith(b"data:"):
                continue
            payload = raw[5:].strip()
            if payload == b"[DONE]":
                break
            _absorb(record, json.loads(payload), time.monotonic())
            if record.error is not None:
                return
