"""Property-based fuzzing of `wattlm serve`'s OpenAI endpoints: thousands of generated bodies, valid
and not, against a real server on a tiny GGUF. Never a 5xx, always OpenAI's error shape for a
refusal, a complete answer or stream otherwise, and afterwards an engine loop that is alive with
every slot free. An unexpected exception inside a handler answers OpenAI's error shape too."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.serve.test_scheduler import service
from tests.serve.test_server import running

pytestmark = pytest.mark.engines

EXAMPLES = 3000  # both endpoints together

junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.lists(st.integers(-5, 300), max_size=5),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
text = st.text(max_size=60)
valid_sampling = {
    "max_tokens": st.integers(1, 12),
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0.01, 1),
    "seed": st.integers(0, 2**32),
    "stop": st.one_of(text, st.lists(text, max_size=3)),
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "ignore_eos": st.booleans(),
    "min_tokens": st.integers(0, 12),
    "user": text,
}
completion = st.fixed_dictionaries(
    {"prompt": st.one_of(text, st.lists(st.integers(0, 200), min_size=1, max_size=40))}, optional=valid_sampling
)
chat = st.fixed_dictionaries(
    {
        "messages": st.lists(
            st.fixed_dictionaries(
                {"role": st.sampled_from(["system", "developer", "user", "assistant"]), "content": text}
            ),
            min_size=1,
            max_size=4,
        )
    },
    optional=valid_sampling,
)
fields = [
    "model", "prompt", "messages", "max_tokens", "temperature", "top_p", "seed", "stop", "stream", "stream_options",
    "ignore_eos", "min_tokens", "n", "logprobs", "echo", "max_completion_tokens", "presence_penalty", "unknown",
]  # fmt: skip


def bodies(valid):
    """Valid bodies; valid ones with one field set to junk; and objects of junk."""
    mutated = st.tuples(valid, st.sampled_from(fields), junk).map(lambda t: t[0] | {t[1]: t[2]})
    return st.one_of(valid, mutated, st.dictionaries(st.sampled_from(fields), junk, max_size=5))


def body_bytes(body):
    return st.one_of(
        *[st.builds(lambda b: json.dumps(b, allow_nan=True).encode(), body)] * 8,
        st.binary(max_size=40),  # not JSON at all
        st.builds(lambda v: json.dumps(v).encode(), st.lists(st.integers(), max_size=3)),  # JSON, not an object
    )


def call(url: str, data: bytes) -> tuple[int, bytes, str]:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read(), r.headers.get("content-type", "")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get("content-type", "")


def check(status: int, raw: bytes, kind: str) -> None:
    assert status < 500, (status, raw[:300])
    if status != 200:
        err = json.loads(raw)["error"]
        assert isinstance(err["message"], str) and err["message"] and "type" in err
        return
    if kind.startswith("text/event-stream"):
        events = [line[5:].strip() for line in raw.decode().splitlines() if line.startswith("data:")]
        assert events and events[-1] == "[DONE]", raw[-200:]
        for e in events[:-1]:
            json.loads(e)
    else:
        answer = json.loads(raw)
        assert answer["choices"] and answer["usage"]["completion_tokens"] >= 0


@pytest.mark.slow
def test_generated_bodies_never_break_the_server(gguf, tmp_path):
    with running(gguf, tmp_path, "--max-new-tokens", "12", "--max-batch", "2", "--max-queue", "8") as (url, *_):
        seen: dict[int, int] = {}

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(
            st.sampled_from(["completions", "chat"]).flatmap(
                lambda e: st.tuples(st.just(e), body_bytes(bodies(completion if e == "completions" else chat)))
            )
        )
        def one(case):
            endpoint, data = case
            status, raw, kind = call(f"{url}/v1/{'chat/' if endpoint == 'chat' else ''}completions", data)
            seen[status] = seen.get(status, 0) + 1
            check(status, raw, kind)

        one()
        health = json.loads(urllib.request.urlopen(f"{url}/health", timeout=10).read())
        stats = json.loads(urllib.request.urlopen(f"{url}/stats", timeout=10).read())
    print("statuses", seen)
    assert sum(seen.values()) >= EXAMPLES and seen.get(200, 0) > 300 and seen.get(400, 0) > 300, seen
    assert health["status"] == "ready" and health["in_flight"] == 0 and health["slots_free"] == health["slots"]
    cache = stats["prefix_cache"]
    assert cache["lookups"] == seen[200] and cache["hits"] <= cache["lookups"]


async def _asgi(app, method: str, path: str, body: bytes) -> tuple[int, bytes]:
    """One request through an ASGI app, in process (no HTTP client library needed)."""
    sent = {"status": 0, "body": b""}
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)  # the client stays connected until the answer is sent
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            sent["status"] = message["status"]
        elif message["type"] == "http.response.body":
            sent["body"] += message.get("body", b"")

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "scheme": "http",
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1),
        "http_version": "1.1",
        "root_path": "",
    }
    try:
        await app(scope, receive, send)
    except RuntimeError:  # Starlette re-raises after answering, so the server can log it
        pass
    return sent["status"], sent["body"]


def test_an_unexpected_exception_answers_openais_error_shape(gguf, tmp_path):
    from wattlm.serve.app import create_app

    s, loaded = service(gguf, tmp_path)
    try:

        def broken(text):
            raise RuntimeError("a defect")

        loaded.engine.tokenize = broken
        app = create_app(s)
        status, raw = asyncio.run(_asgi(app, "POST", "/v1/completions", b'{"prompt": "hello"}'))
        ok_status, _ = asyncio.run(_asgi(app, "POST", "/v1/completions", b'{"prompt": [1, 2, 3], "max_tokens": 2}'))
    finally:
        s.close()
    assert status == 500
    err = json.loads(raw)["error"]
    assert err["type"] == "server_error" and "RuntimeError" in err["message"] and "a defect" not in err["message"]
    assert ok_status == 200  # and the next request is served
