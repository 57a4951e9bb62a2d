"""Check the server before any load is sent: reachable, OpenAI-compatible, serving the model; and
find out which fields it takes to pin the output length (vLLM takes `ignore_eos` and `min_tokens`,
llama.cpp's server `ignore_eos`; a strict server refuses unknown fields, so each is tried).

Every request goes to the server at the URL given, nowhere else.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, replace

from ..energy.sources.remote import Getter
from ..errors import ConfigError, InvalidInputError
from .client import Endpoint, RequestRecord, send, session
from .prompts import Prompt

PROBE_TIMEOUT_S = 30.0
PIN_FIELDS = ("ignore_eos", "min_tokens")  # min_tokens is sent with max_tokens' value


@dataclass(frozen=True)
class ServerInfo:
    endpoint: Endpoint
    models: tuple[str, ...]
    version: dict[str, str]  # what the server says it is, where it says it
    pinned_by: tuple[str, ...]  # fields that pin the output length besides max_tokens


def _root(url: str) -> str:
    base = url.rstrip("/")
    return base[: -len("/v1")] if base.endswith("/v1") else base


def list_models(get: Getter, url: str) -> tuple[str, ...]:
    where = url.rstrip("/") + "/models"
    try:
        status, text = get(where, 10.0)
    except OSError as e:
        raise InvalidInputError(
            f"cannot reach {where} ({type(e).__name__}): start the server, or give its address with --url"
        ) from e
    try:
        data = json.loads(text)
        models = tuple(str(m["id"]) for m in data["data"])
    except (ValueError, KeyError, TypeError) as e:
        raise InvalidInputError(
            f"{where} answered HTTP {status} without an OpenAI model list: is {url} an "
            "OpenAI-compatible API (its base URL usually ends in /v1)?"
        ) from e
    return models


def server_version(get: Getter, url: str) -> dict[str, str]:
    """Ask where servers tell: vLLM /version, llama.cpp /props, TGI /info, Ollama /api/version."""
    root = _root(url)
    out: dict[str, str] = {}
    for path, keys in (
        ("/version", ("version",)),
        ("/props", ("build_info", "model_path")),
        ("/info", ("version", "model_id")),
        ("/api/version", ("version",)),
    ):
        try:
            status, text = get(root + path, 2.0)
            data = json.loads(text) if status == 200 else None
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            out.update({f"{path}:{k}": str(data[k]) for k in keys if k in data})
    return out


def _try(endpoint: Endpoint, prompt: Prompt) -> RequestRecord:
    async def go() -> RequestRecord:
        record = RequestRecord(level=-1, measured=False, asked_tokens=prompt.max_tokens)
        async with session() as client:
            await send(client, endpoint, prompt, record, PROBE_TIMEOUT_S)
        return record

    return asyncio.run(go())


def probe(url: str, model: str | None, api: str, stream: bool, get: Getter | None = None) -> ServerInfo:
    """Raises InvalidInputError (one line, before any load) where the server cannot be used."""
    from ..httpget import get as http_get

    get = get or http_get
    models = list_models(get, url)
    if model is None:
        if not models:
            raise InvalidInputError(f"{url} lists no model: load one into the server, or name it with --model")
        model = models[0]
    elif models and model not in models:
        shown = ", ".join(models[:5]) + (" …" if len(models) > 5 else "")
        raise ConfigError(f"{{model}} {model!r} is not served at {url}; it serves: {shown}", field="model")
    prompt = Prompt(({"role": "user", "content": "Say something."},), 2)
    base = Endpoint(url, model, api, stream=stream)
    tried = []
    for endpoint in (
        replace(base, pins=PIN_FIELDS),
        replace(base, pins=PIN_FIELDS[:1]),
        base,
        replace(base, usage_in_stream=False),
    ):
        record = _try(endpoint, prompt)
        if record.ok and (record.token_times_s or record.usage_completion_tokens):
            return ServerInfo(endpoint, models, server_version(get, url), endpoint.pins)
        tried.append(record.error or "no tokens in the answer")
        if record.error is not None and not record.error.startswith("HTTP 4"):
            break  # a field the server dislikes gives 4xx; anything else will not get better
    raise InvalidInputError(
        f"{url}{base.path} did not answer a 2-token {api} request as an OpenAI-compatible server does "
        f"({tried[-1]}); check --api and --model"
    )
