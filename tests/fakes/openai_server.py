"""A small OpenAI-compatible server for tests: timing and token counts under the test's control.

    with FakeOpenAI(ttft_s=0.05, itl_s=0.01) as server:
        server.url   # http://127.0.0.1:PORT/v1

Streams one token per SSE chunk (`tok `), `max_tokens` of them unless `cut_after` stops early,
reports streamed usage when asked (`stream_options.include_usage`) and `report_usage` is on.
`strict=True` refuses fields outside the plain OpenAI API (ignore_eos, min_tokens) with 400, as a
strict server does. Binds to 127.0.0.1 on a free port; `stop()` (or leaving the `with`) ends it.
Run as a script (`python -m tests.fakes.openai_server PORT`) it serves until killed.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PLAIN_FIELDS = {"model", "messages", "prompt", "max_tokens", "stream", "stream_options", "temperature"}


class FakeOpenAI:
    def __init__(
        self,
        *,
        model: str = "fake-model",
        ttft_s: float = 0.0,
        itl_s: float = 0.0,
        cut_after: int | None = None,
        report_usage: bool = True,
        strict: bool = False,
        fail_every: int | None = None,  # every n-th completion request answers HTTP 500
        slots: int | None = None,  # at most this many requests answered at once; the rest wait (a server's batch)
        port: int = 0,
    ) -> None:
        self.model, self.ttft_s, self.itl_s = model, ttft_s, itl_s
        self.cut_after, self.report_usage, self.strict, self.fail_every = cut_after, report_usage, strict, fail_every
        self.bodies: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(slots) if slots else None
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _json(self, code: int, data: Any) -> None:
                body = json.dumps(data).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/v1/models":
                    self._json(200, {"object": "list", "data": [{"id": fake.model, "object": "model"}]})
                elif self.path == "/version":
                    self._json(200, {"version": "fake-1.0"})
                else:
                    self._json(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError:
                    self._json(400, {"error": {"message": "body is not JSON"}})
                    return
                chat = self.path == "/v1/chat/completions"
                if self.path not in ("/v1/chat/completions", "/v1/completions"):
                    self._json(404, {"error": {"message": f"no route {self.path}"}})
                    return
                if body.get("model") != fake.model:
                    self._json(404, {"error": {"message": f"model {body.get('model')!r} not found"}})
                    return
                if fake.strict and set(body) - PLAIN_FIELDS:
                    self._json(400, {"error": {"message": f"unknown fields {sorted(set(body) - PLAIN_FIELDS)}"}})
                    return
                with fake.lock:
                    fake.bodies.append(body)
                    count = len(fake.bodies)
                if fake.fail_every and count % fake.fail_every == 0:
                    self._json(500, {"error": {"message": "injected failure"}})
                    return
                n = int(body.get("max_tokens") or 16)
                if fake.cut_after is not None:
                    n = min(n, fake.cut_after)
                usage = {"prompt_tokens": 7, "completion_tokens": n, "total_tokens": 7 + n}
                if fake.slots is not None:
                    with fake.slots:
                        self._answer(body, chat, n, usage)
                else:
                    self._answer(body, chat, n, usage)

            def _answer(self, body: dict[str, Any], chat: bool, n: int, usage: dict[str, int]) -> None:
                if not body.get("stream"):
                    time.sleep(fake.ttft_s + fake.itl_s * max(0, n - 1))
                    text = "tok " * n
                    choice = {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
                    self._json(200, {"choices": [choice | {"finish_reason": "length"}], "usage": usage})
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                time.sleep(fake.ttft_s)
                try:
                    for i in range(n):
                        if i:
                            time.sleep(fake.itl_s)
                        choice: dict[str, Any] = {"delta": {"content": "tok "}} if chat else {"text": "tok "}
                        choice["finish_reason"] = "length" if i == n - 1 else None
                        self.wfile.write(f"data: {json.dumps({'choices': [choice]})}\n\n".encode())
                        self.wfile.flush()
                    if fake.report_usage and (body.get("stream_options") or {}).get("include_usage"):
                        self.wfile.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode())
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    port = int(sys.argv[1])
    itl = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    slots = int(sys.argv[3]) if len(sys.argv) > 3 else None
    server = FakeOpenAI(port=port, itl_s=itl, slots=slots)
    server.thread.start()
    try:
        server.thread.join()
    except KeyboardInterrupt:
        server.stop()
