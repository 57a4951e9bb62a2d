"""`wattlm serve` as a user runs it: a subprocess on a loopback port, driven by the official openai
client, by raw HTTP for bad input, and by signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.load.servers import bounded, free_port, wait_until_serving
from tests.serve.helpers import tiny_gguf
from wattlm.httpget import get
from wattlm.jsonlog import read_ledger
from wattlm.results import RunDir

pytestmark = pytest.mark.engines


@pytest.fixture(scope="module")
def gguf(tmp_path_factory):
    return tiny_gguf(tmp_path_factory.mktemp("tiny"))


def serve_command(gguf: Path | None, port: int, *extra: str) -> list[str]:
    model = [] if gguf is None else ["--model", str(gguf)]
    return bounded(
        [sys.executable, "-m", "wattlm", "serve", *model, "--port", str(port), "--threads", "1", *extra],
        300,
    )


@contextmanager
def running(gguf: Path | None, tmp_path: Path, *extra: str, env: dict | None = None):
    port = free_port()
    log = tmp_path / f"serve-{port}.log"
    ledger = tmp_path / f"ledger-{port}.jsonl"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            serve_command(gguf, port, "--ledger", str(ledger), *extra),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        why = wait_until_serving(f"http://127.0.0.1:{port}/health", proc, 120, log)
        assert why is None, why
        yield f"http://127.0.0.1:{port}", proc, ledger, log
    finally:
        kill(proc)


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL the server and the `timeout` around it (one process group). A signal meant for the
    server alone goes to `proc`: `timeout` passes it on once."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(30)


def post(url: str, body: bytes | dict, headers: dict | None = None, timeout: float = 30) -> tuple[int, dict, dict]:
    import urllib.error
    import urllib.request

    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def test_openai_client_gets_answers_with_their_energy(gguf, tmp_path):
    openai = pytest.importorskip("openai")
    with running(gguf, tmp_path) as (url, proc, ledger, _):
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused")
        (model,) = [m.id for m in client.models.list()]
        assert model == "tiny"
        raw = client.completions.with_raw_response.create(
            model=model, prompt="To be, or not to be", max_tokens=8, temperature=0, extra_body={"ignore_eos": True}
        )
        completion = raw.parse()
        energy = completion.usage.model_extra["energy"]
        assert completion.usage.completion_tokens == 8 and completion.choices[0].finish_reason == "length"
        assert energy["total_j"] > 0 and energy["total_j"] == pytest.approx(energy["prefill_j"] + energy["decode_j"])
        assert float(raw.headers["x-wattlm-energy-j"]) == pytest.approx(energy["total_j"], rel=1e-5)
        chunks = list(
            client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": "whether 'tis nobler"}],
                max_tokens=6,
                stream=True,
                stream_options={"include_usage": True},
                extra_body={"ignore_eos": True},
            )
        )
        assert chunks[0].choices[0].delta.role == "assistant"
        assert chunks[-2].choices[0].finish_reason == "length"
        assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6
        assert chunks[-1].usage.model_extra["energy"]["total_j"] > 0
        status, health = get(url + "/health", 5)
        assert status == 200 and json.loads(health)["batching"].startswith("continuous")
        metrics = get(url + "/metrics", 5)[1]
        assert 'wattlm_requests_total{status="completed"} 2.0' in metrics
        assert 'wattlm_energy_joules_total{phase="decode"}' in metrics
        assert "wattlm_request_energy_joules_bucket" in metrics
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    lines = read_ledger(ledger)
    assert [(r["endpoint"], r["status"], r["completion_tokens"]) for r in lines] == [
        ("completions", "completed", 8),
        ("chat", "completed", 6),
    ]
    assert lines[0]["energy"]["total_j"] == pytest.approx(energy["total_j"])


def test_bad_requests_get_openai_errors_and_the_server_goes_on(gguf, tmp_path):
    with running(gguf, tmp_path, "--max-new-tokens", "32", "--max-prompt-tokens", "64") as (url, proc, ledger, _):
        cases = [
            (b"{not json", 400, "not valid JSON"),
            ({"prompt": "x", "max_tokens": "8"}, 400, "max_tokens"),
            ({"prompt": "x", "max_tokens": 33}, 400, "limit of 32"),
            ({"prompt": "to be " * 200}, 400, "limit of 64"),
            ({"prompt": [999999]}, 400, "vocabulary"),
            ({"prompt": "x", "model": "../../etc/passwd"}, 404, "not served here"),
        ]
        for body, code, text in cases:
            status, _, answer = post(url + "/v1/completions", body)
            assert status == code and text in answer["error"]["message"], (body[:40], status, answer)
            assert set(answer["error"]) == {"message", "type", "param", "code"}
        # A body declared over the cap is refused before it is read (a raw socket: a client still sending
        # 2 MiB when the server answers could see its connection reset instead of the 413).
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(
                b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {2 << 20}\r\n\r\n".encode()
                + b'{"prompt": "'
            )
            reply = _read_until(sock, 1, b"}}")
        assert reply.startswith(b"HTTP/1.1 413") and b"over 1048576 bytes" in reply
        status, _, answer = post(url + "/v1/nowhere", {})
        assert status == 404 and answer["error"]["type"] == "not_found_error"
        status, _, answer = post(url + "/v1/completions", {"prompt": "still here", "max_tokens": 2})
        assert status == 200 and answer["usage"]["completion_tokens"] >= 1
        assert proc.poll() is None


def test_api_key(gguf, tmp_path):
    with running(gguf, tmp_path, "--api-key", "s3cret") as (url, proc, ledger, _):
        status, _, answer = post(url + "/v1/completions", {"prompt": "x", "max_tokens": 2})
        assert status == 401 and answer["error"]["type"] == "authentication_error"
        ok = post(url + "/v1/completions", {"prompt": "x", "max_tokens": 2}, {"Authorization": "Bearer s3cret"})
        assert ok[0] == 200
    r = subprocess.run(
        serve_command(gguf, free_port(), "--host", "0.0.0.0"), capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--api-key" in r.stderr
    assert "Traceback" not in r.stderr


def test_full_queue_gets_429_with_retry_after(gguf, tmp_path):
    import concurrent.futures

    with running(gguf, tmp_path, "--max-batch", "1", "--max-queue", "1", "--step-tokens", "8") as (url, *_):
        body = {"prompt": "To be", "max_tokens": 200, "ignore_eos": True}
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: post(url + "/v1/completions", body, timeout=60), range(4)))
        codes = sorted(a[0] for a in answers)
        assert codes.count(200) >= 1 and 429 in codes, codes
        refused = next(a for a in answers if a[0] == 429)
        assert refused[1]["retry-after"] == "1" and refused[2]["error"]["type"] == "rate_limit_error"


def _stream_request(url: str, max_tokens: int, stream: bool = True) -> socket.socket:
    """Open a completion on a raw socket, so the test decides when the client goes away."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    body = json.dumps({"prompt": "To be", "max_tokens": max_tokens, "ignore_eos": True, "stream": stream}).encode()
    sock.sendall(
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    return sock


def _read_until(sock: socket.socket, count: int, marker: bytes = b"data: ") -> bytes:
    data = b""
    while data.count(marker) < count:
        part = sock.recv(65536)
        if not part:
            break
        data += part
    return data


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_leaving_mid_answer_frees_its_slot_and_is_ledgered_as_cancelled(gguf, tmp_path, stream):
    with running(gguf, tmp_path, "--max-batch", "2", "--max-new-tokens", "2000") as (url, proc, ledger, _):
        sock = _stream_request(url, 2000, stream)
        if stream:
            _read_until(sock, 3)
        else:
            time.sleep(0.3)
        sock.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            health = json.loads(get(url + "/health", 5)[1])
            if health["slots_free"] == 2 and read_ledger(ledger):
                break
            time.sleep(0.05)
        assert health["slots_free"] == 2
        (line,) = read_ledger(ledger)
        assert line["status"] == "cancelled" and (3 if stream else 1) <= line["completion_tokens"] < 2000
        assert line["energy"]["total_j"] > 0


def test_sigterm_drains_then_exits_0_and_sigkill_leaves_whole_lines(gguf, tmp_path):
    with running(gguf, tmp_path, "--drain-s", "60", "--max-new-tokens", "2000") as (url, proc, ledger, log):
        sock = _stream_request(url, 2000)  # a few seconds of decoding
        _read_until(sock, 2)
        proc.send_signal(signal.SIGTERM)
        os.killpg(proc.pid, signal.SIGTERM)  # the same stop request again, to the whole group: still a drain
        time.sleep(0.1)
        status, _, answer = post(url + "/v1/completions", {"prompt": "x", "max_tokens": 2})
        assert status == 503 and "shutting down" in answer["error"]["message"]
        rest = _read_until(sock, 1, b"[DONE]")
        sock.close()
        assert b'"finish_reason":"length"' in rest
        assert proc.wait(30) == 0
    (line,) = read_ledger(ledger)
    assert line["status"] == "completed" and line["completion_tokens"] == 2000

    with running(gguf, tmp_path, "--max-new-tokens", "2000") as (url, proc, ledger, _):
        for _ in range(5):
            post(url + "/v1/completions", {"prompt": "x", "max_tokens": 3})
        sock = _stream_request(url, 2000)
        _read_until(sock, 2)
        kill(proc)
        sock.close()
        assert proc.returncode == -signal.SIGKILL
        text = ledger.read_text()
    assert text.endswith("\n") and len(read_ledger(ledger)) == len(text.splitlines()) == 5


def test_cli_checks_before_loading(gguf, tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "wattlm", "serve", "--model", str(tmp_path / "none.gguf")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "no such GGUF file" in r.stderr and "Traceback" not in r.stderr
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    r = subprocess.run(serve_command(gguf, port), capture_output=True, text=True, timeout=60)
    busy.close()
    assert r.returncode == 2 and "in use" in r.stderr and "--port" in r.stderr
    r = subprocess.run(serve_command(gguf, free_port(), "--max-batch", "0"), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--max-batch" in r.stderr


@pytest.mark.slow
def test_ledger_and_wattlm_load_agree_on_joules_per_output_token(gguf, tmp_path):
    from datetime import datetime, timedelta

    text = tmp_path / "text.txt"
    text.write_text("to be or not to be, that is the question: whether 'tis nobler in the mind to suffer\n" * 50)
    with running(gguf, tmp_path) as (url, proc, ledger, _):
        r = subprocess.run(
            [sys.executable, "-m", "wattlm", "load", "--url", url + "/v1", "--concurrency", "4", "--duration", "4"]
            + ["--warmup", "1", "--input-len", "16", "--output-len", "200", "--text", str(text)]
            + ["--out", str(tmp_path / "run"), "--json"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stderr
    (level,) = json.loads(r.stdout)
    start = datetime.fromisoformat(level["measurement"]["start_time"])
    end = datetime.fromisoformat(level["measurement"]["end_time"])
    served = {line["id"]: line for line in read_ledger(ledger)}
    inside = [
        line
        for line in served.values()
        if start <= datetime.fromisoformat(line["arrival"]) + timedelta(seconds=line["e2e_s"]) <= end
    ]
    assert len(inside) >= 10
    # The same requests, each with its share of what each meter read: the server's exact split over its
    # steps against wattlm load's split along the requests' timelines. Both leave idle apart (the
    # moments between one answer and the client's next request), which the level's window counts.
    measured = [x for x in RunDir.open(tmp_path / "run").requests() if x["measured"] and x["energy_status"] == "ok"]
    both = [x for x in measured if x["id"] in served]
    assert len(both) >= 10
    ledger_j = sum(served[x["id"]]["energy"]["total_j"] for x in both)
    load_j = sum(x["energy_j"] for x in both)
    assert ledger_j / sum(x["output_tokens"] for x in both) == pytest.approx(
        load_j / sum(x["output_tokens"] for x in both), rel=0.05
    )
    # and over the window: the requests that ended in it cost no more per token than the window did
    # (it also holds the idle moments), and not much less while four clients keep the server busy
    ledger_j_per_token = sum(x["energy"]["total_j"] for x in inside) / sum(x["completion_tokens"] for x in inside)
    assert 0.7 * level["j_per_output_token"] <= ledger_j_per_token <= 1.05 * level["j_per_output_token"]
