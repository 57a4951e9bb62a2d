"""The HTTP face of `wattlm serve` (Starlette on uvicorn): the OpenAI completions and chat endpoints,
streaming as server-sent events, /v1/models, /health, /metrics and /stats.

Every answer carries the energy its request was charged: `usage.energy` in the body (the final usage
chunk of a stream, with `stream_options.include_usage`) and the `X-Wattlm-Energy-J` header of a
non-streamed response. Bad requests get OpenAI's error body with a 4xx status and the server goes on.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..listen import bearer_ok
from .protocol import BadRequest, ChatRequest, CompletionRequest, error_body, params, parse
from .scheduler import Delta, Done, Job, Overloaded, Unavailable
from .service import Service


def _error(e: BadRequest) -> JSONResponse:
    headers = {"Retry-After": "1"} if e.status in (429, 503) else None
    return JSONResponse(error_body(e.message, e.kind, e.param), status_code=e.status, headers=headers)


class Relay:
    """Events from the engine thread to the event loop, delivered once per engine step: one wake-up
    of the loop (and one write per connection) per step instead of one per token. On a CPU every
    wake-up takes a core from the engine's threads for a moment, and they wait for each other."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[tuple[asyncio.Queue[Delta | Done], Delta | Done]] = []
        self._lock = threading.Lock()

    def push(self, queue: asyncio.Queue[Delta | Done], event: Delta | Done) -> None:
        with self._lock:
            self._pending.append((queue, event))

    def flush(self) -> None:
        """Called by the engine thread after each step."""
        with self._lock:
            if not self._pending or self.loop is None:
                return
            batch, self._pending = self._pending, []
        try:
            self.loop.call_soon_threadsafe(_deliver, batch)
        except RuntimeError:  # the event loop has closed: nobody is listening any more
            pass


def _deliver(batch: list[tuple[asyncio.Queue[Delta | Done], Delta | Done]]) -> None:
    for queue, event in batch:
        queue.put_nowait(event)


def create_app(service: Service) -> Starlette:
    key = service.config.resolved_api_key()
    relay = Relay()
    service.after_events = relay.flush

    def check(request: Request, *, ready: bool = True) -> None:
        if not bearer_ok(request.headers.get("authorization", ""), key):
            raise BadRequest("missing or wrong API key: send 'Authorization: Bearer KEY'", status=401)
        state = service.current_state()
        if ready and state != "ready":
            what = {"loading": "the model is still loading; retry shortly", "draining": "the server is shutting down"}
            raise BadRequest(f"{what.get(state, 'the server has ' + state + ': ' + service.failure)}", status=503)

    async def body(request: Request) -> Any:
        cap = service.config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            raise BadRequest(f"the request body is over {cap} bytes; send a shorter prompt", status=413)
        data = bytearray()
        async for part in request.stream():
            data += part
            if len(data) > cap:
                raise BadRequest(f"the request body is over {cap} bytes; send a shorter prompt", status=413)
        try:
            return json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BadRequest(f"the request body is not valid JSON ({e.args[0] if e.args else e})") from None

    async def completions(request: Request) -> Response:
        return await _generate(request, "completions")

    async def chat(request: Request) -> Response:
        return await _generate(request, "chat")

    async def _generate(request: Request, endpoint: str) -> Response:
        try:
            check(request)
            kind = ChatRequest if endpoint == "chat" else CompletionRequest
            req = parse(kind, await body(request))
            loaded = service.loaded
            assert loaded is not None
            if req.model is not None and req.model != loaded.name:
                raise BadRequest(
                    f"model {req.model!r} is not served here; GET /v1/models lists {loaded.name!r}",
                    status=404,
                    param="model",
                )
            p = params(req, max_new_tokens=service.config.max_new_tokens)
            prompt = _prompt(req, loaded)
            queue: asyncio.Queue[Delta | Done] = asyncio.Queue()
            relay.loop = asyncio.get_running_loop()
            job = service.job(prompt, p, functools.partial(relay.push, queue), endpoint)
            assert service.scheduler is not None
            try:
                service.scheduler.submit(job)
            except Overloaded as e:
                raise BadRequest(str(e), status=429) from None
            except Unavailable as e:
                raise BadRequest(str(e), status=503) from None
        except BadRequest as e:
            service.metrics.rejected.labels(str(e.status)).inc()
            return _error(e)
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        if req.stream:
            return StreamingResponse(
                _stream(service, job, queue, endpoint, include_usage),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        return await _whole(service, job, queue, endpoint, request)

    async def models(request: Request) -> Response:
        try:
            check(request)
        except BadRequest as e:
            return _error(e)
        assert service.loaded is not None
        card = {"id": service.loaded.name, "object": "model", "created": int(service.started), "owned_by": "wattlm"}
        return JSONResponse({"object": "list", "data": [card]})

    async def health(request: Request) -> Response:
        info = service.health()
        return JSONResponse(info, status_code=200 if info["status"] == "ready" else 503)

    async def metrics(request: Request) -> Response:
        try:
            check(request, ready=False)
        except BadRequest as e:
            return _error(e)
        service.sync_metrics()
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def stats(request: Request) -> Response:
        try:
            check(request, ready=False)
        except BadRequest as e:
            return _error(e)
        return JSONResponse(service.stats())

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return JSONResponse(error_body(message, kind), status_code=exc.status_code)

    async def server_error(request: Request, exc: Exception) -> Response:
        # A defect, not the client's fault: OpenAI's error shape (clients parse it), 500, and the
        # server goes on; uvicorn logs the traceback.
        message = f"{request.method} {request.url.path}: internal error ({type(exc).__name__}); the server goes on"
        return JSONResponse(error_body(message, "server_error"), status_code=500)

    routes = [
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/stats", stats, methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: server_error})


def _prompt(req: Any, loaded: Any) -> list[int]:
    if isinstance(req, ChatRequest):
        if loaded.chat is None:
            raise BadRequest("this model has no chat template; use /v1/completions with a prompt")
        try:
            text = loaded.chat.render([{"role": m.role, "content": m.text()} for m in req.messages])
        except ValueError as e:
            raise BadRequest(str(e), param="messages") from None
        ids = loaded.engine.tokenize(text)
        bos = getattr(loaded.engine, "bos", None)
        if len(ids) > 1 and bos is not None and ids[0] == ids[1] == bos:  # the template wrote BOS itself
            ids = ids[1:]
        return ids
    if isinstance(req.prompt, list):
        return list(req.prompt)
    return loaded.engine.tokenize(req.prompt)


def _usage(service: Service, done: Done) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": done.cached_tokens},
    }
    energy = service.energy_of(done)
    if energy is not None:
        usage["energy"] = energy
    return usage


def _choice(endpoint: str, text: str, finish: str | None, *, delta: bool) -> dict[str, Any]:
    if endpoint == "chat":
        body = {"delta": {"content": text}} if delta else {"message": {"role": "assistant", "content": text}}
        return {"index": 0, **body, "finish_reason": finish, "logprobs": None}
    return {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}


def _head(job: Job, endpoint: str, service: Service, *, chunk: bool) -> dict[str, Any]:
    kind = ("chat.completion.chunk" if chunk else "chat.completion") if endpoint == "chat" else "text_completion"
    assert service.loaded is not None
    return {"id": job.id, "object": kind, "created": int(time.time()), "model": service.loaded.name}


async def _whole(
    service: Service, job: Job, queue: asyncio.Queue[Delta | Done], endpoint: str, request: Request
) -> Response:
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        while True:
            next_event = asyncio.ensure_future(queue.get())
            finished, _ = await asyncio.wait({next_event, gone}, return_when=asyncio.FIRST_COMPLETED)
            if next_event not in finished:  # the client went away: free its slot at the next step
                next_event.cancel()
                job.cancel()
                _wake(service)
                return Response(status_code=499)
            event = next_event.result()
            if isinstance(event, Done):
                break
    except asyncio.CancelledError:
        job.cancel()
        _wake(service)
        raise
    finally:
        gone.cancel()
    if event.status == "failed":
        return JSONResponse(error_body(f"the engine failed on this request: {event.error}", "server_error"), 500)
    if event.status == "cancelled":
        return JSONResponse(error_body("the request was cancelled: the server is shutting down", "server_error"), 503)
    out = _head(job, endpoint, service, chunk=False)
    out["choices"] = [_choice(endpoint, event.text, event.finish_reason, delta=False)]
    out["usage"] = _usage(service, event)
    if event.timings is not None:
        out["timings"] = event.timings
    headers = {}
    if event.energy is not None:
        headers["X-Wattlm-Energy-J"] = f"{event.energy.total_j:.6g}"
        headers["X-Wattlm-Energy-Provenance"] = out["usage"]["energy"]["provenance"]
    return JSONResponse(out, headers=headers)


async def _stream(
    service: Service, job: Job, queue: asyncio.Queue[Delta | Done], endpoint: str, include_usage: bool
) -> AsyncIterator[str]:
    def sse(data: dict[str, Any]) -> str:
        return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"

    finished = False
    try:
        if endpoint == "chat":
            first = _head(job, endpoint, service, chunk=True)
            first["choices"] = [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
            yield sse(first)
        while True:
            events = [await queue.get()]
            while not queue.empty():  # what one engine step delivered goes out in one write
                events.append(queue.get_nowait())
            text = "".join(e.text for e in events if isinstance(e, Delta))
            out = []
            if text:
                chunk = _head(job, endpoint, service, chunk=True)
                chunk["choices"] = [_choice(endpoint, text, None, delta=True)]
                out.append(sse(chunk))
            done = next((e for e in events if isinstance(e, Done)), None)
            if done is None:
                if out:
                    yield "".join(out)
                continue
            finished = True
            if done.status != "completed":
                why = done.error or "the server is shutting down"
                out.append(sse(error_body(f"the request ended early ({done.status}): {why}", "server_error")))
            else:
                last = _head(job, endpoint, service, chunk=True)
                last["choices"] = [_choice(endpoint, "", done.finish_reason, delta=True)]
                if done.timings is not None:
                    last["timings"] = done.timings
                out.append(sse(last))
                if include_usage:
                    usage = _head(job, endpoint, service, chunk=True)
                    usage["choices"] = []
                    usage["usage"] = _usage(service, done)
                    out.append(sse(usage))
            out.append("data: [DONE]\n\n")
            yield "".join(out)
            return
    finally:
        if not finished:  # the client went away (or the connection broke) before the end
            job.cancel()
            _wake(service)


async def _disconnected(request: Request) -> None:
    """Returns when the client closes the connection (the body has been read, so the next ASGI
    message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _wake(service: Service) -> None:
    if service.scheduler is not None:
        service.scheduler.wake()
