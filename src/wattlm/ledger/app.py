"""The receiver: OTLP/HTTP on /v1/traces (protobuf or JSON), /metrics and /health on the same port.
A bad body is answered 400 (413 when too large) with what is wrong, and the receiver goes on."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..listen import bearer_ok
from .metrics import LedgerMetrics
from .otlp import BadPayload, decode, response
from .settle import Settler
from .spans import host_of, is_request, to_timeline


class TooLarge(Exception):
    pass


async def _read(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _problem(status: int, message: str) -> JSONResponse:
    return JSONResponse({"code": status, "message": message}, status_code=status)


def create_app(
    settler: Settler,
    metrics: LedgerMetrics,
    *,
    group_by: str | None,
    api_key: str | None,
    max_body_bytes: int,
    health: Any,
) -> Starlette:
    async def traces(request: Request) -> Response:
        if not bearer_ok(request.headers.get("authorization", ""), api_key):
            metrics.rejected.labels("unauthorised").inc()
            return _problem(401, "a valid API key is required: send 'Authorization: Bearer KEY'")
        try:
            body = await _read(request, max_body_bytes)
        except TooLarge:
            metrics.rejected.labels("too_large").inc()
            return _problem(413, f"the body is over {max_body_bytes} bytes: export smaller batches")
        content_type = request.headers.get("content-type", "application/x-protobuf")
        try:
            spans = decode(body, content_type)
        except BadPayload as e:
            metrics.rejected.labels("malformed").inc()
            return _problem(400, str(e))
        for span in spans:
            if not is_request(span):
                metrics.spans.labels("ignored").inc()
                continue
            result = settler.add(to_timeline(span, group_by), host_of(span))
            metrics.spans.labels(result).inc()
        data, kind = response(content_type)
        return Response(data, media_type=kind)

    async def prometheus(request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        metrics.pending.set(settler.pending)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        return JSONResponse(health())

    return Starlette(
        routes=[
            Route("/v1/traces", traces, methods=["POST"]),
            Route("/metrics", prometheus, methods=["GET"]),
            Route("/health", healthz, methods=["GET"]),
        ]
    )
