"""`wattlm ledger` as a user runs it: a real OTLP/HTTP exporter (the OpenTelemetry SDK) sending spans
shaped as vLLM's from two hosts, each with its own `wattlm exporter` (fake NVML GPUs) on a loopback
port; bad bodies answered 400/413 while the receiver goes on; kill -9 and a restart without
duplicated ids; the API key off loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fakes import vllm_spans
from tests.fakes.vllm_spans import Request
from tests.load.servers import free_port, wait_until_serving
from tests.load.test_exporters import start_exporter
from wattlm.httpget import get

pytest.importorskip("opentelemetry.sdk")
pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
WATTLM = [sys.executable, "-m", "wattlm"]


def start_ledger(out: Path, port: int, *args: str, stop_after: float = 90) -> subprocess.Popen:
    p = subprocess.Popen(
        [*WATTLM, "ledger", "--out", str(out), "--otlp", f"127.0.0.1:{port}", "--stop-after", str(stop_after), *args],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    why = wait_until_serving(f"http://127.0.0.1:{port}/health", p, 60.0)
    if why is not None:
        p.kill()
        raise AssertionError(f"wattlm ledger did not start: {why}")
    return p


def burst(tag: str, n: int, start: float) -> list[Request]:
    """n overlapping requests of mixed shapes that all end before now (spans arrive at the end)."""
    return [
        Request(
            f"{tag}-{i}",
            start + 0.15 * i,
            0.05,
            0.1 + 0.002 * (100 + 40 * i),
            0.4 + 0.05 * i,
            100 + 40 * i,
            8 + 4 * i,
            tenant=("acme", "zeta")[i % 2],
        )
        for i in range(n)
    ]


def ledger_lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def declared_too_large(port: int, size: int) -> int:
    """Declare a body over the limit on a raw socket and read the answer (a client still sending the
    body could see the connection reset once the server has answered)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            f"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            f"Content-Length: {size}\r\n\r\n".encode()
        )
        return int(s.recv(4096).split(b" ", 2)[1])


def post(url: str, body: bytes, kind: str) -> int:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=body, headers={"Content-Type": kind}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_two_hosts_spans_from_the_sdk_are_split_per_host_and_conserved(tmp_path):
    ports = [free_port(), free_port()]
    exporters = [start_exporter(ports[0], "GPU-node-a", 120.0), start_exporter(ports[1], "GPU-node-b", 60.0)]
    lp = free_port()
    out = tmp_path / "ledger.jsonl"
    ledger = start_ledger(
        out,
        lp,
        "--energy-from",
        f"127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}",
        "--host-map",
        f"node-a=127.0.0.1:{ports[0]},node-b=127.0.0.1:{ports[1]}",
        "--settle-s",
        "6",
        "--group-by",
        "tenant",
    )
    try:
        endpoint = f"http://127.0.0.1:{lp}/v1/traces"
        time.sleep(1.5)  # the requests must start after the ledger's first energy reading
        start = time.time()
        time.sleep(2.5)  # ... and end before their spans are sent, as a server's do
        vllm_spans.send(endpoint, "node-a", burst("a", 4, start))
        vllm_spans.send(endpoint, "node-b", burst("b", 4, start))
        # a bad body in between: 400, 413, and the receiver goes on
        assert post(endpoint, b"\x00\xffgarbage", "application/x-protobuf") == 400
        assert post(endpoint, b'{"resourceSpans": [', "application/json") == 400
        assert declared_too_large(lp, 17 << 20) == 413
        vllm_spans.send(endpoint, "node-z", burst("z", 1, start))  # no energy host for it
        deadline = time.time() + 30
        while time.time() < deadline:
            done = [r for r in ledger_lines(out) if r["kind"] == "request"]
            if len(done) >= 9:
                break
            time.sleep(0.5)
        status, metrics = get(f"http://127.0.0.1:{lp}/metrics", 5)
        assert status == 200
        assert 'wattlm_request_energy_joules_total{model="meta-llama/Llama-3.1-8B-Instruct",tenant="acme"}' in metrics
        assert 'wattlm_ledger_rejected_payloads_total{reason="malformed"} 2.0' in metrics
        assert 'wattlm_ledger_unattributed_total{reason="no_host"} 1.0' in metrics
    finally:
        ledger.send_signal(signal.SIGTERM)
        ledger.wait(timeout=30)
        for e in exporters:
            e.terminate()
            e.wait(timeout=30)
    assert ledger.returncode == 0, ledger.stderr.read() if ledger.stderr else ""
    lines = ledger_lines(out)
    reqs = {r["id"]: r for r in lines if r["kind"] == "request"}
    assert reqs["z-0"]["status"] == "unattributed"
    for tag, host, n in (("a", f"127.0.0.1:{ports[0]}", 4), ("b", f"127.0.0.1:{ports[1]}", 4)):
        mine = [reqs[f"{tag}-{i}"] for i in range(n)]
        assert all(r["status"] == "ok" and r["host"] == host and r["energy_j"] > 0 for r in mine), mine
        # both exporters run here and list this machine's estimated CPU: it counts once, for node-a
        assert {r["provenance"] for r in mine} == {"estimated" if tag == "a" else "counter"}
        # larger requests (more prompt and output, longer) cost more
        energies = [r["energy_j"] for r in mine]
        assert energies[-1] > energies[0]
        intervals = [i for i in lines if i["kind"] == "interval" and i["host"] == host]
        metered = sum(i["energy_j"] for i in intervals)
        assert sum(i["requests_j"] + i["idle_j"] for i in intervals) == pytest.approx(metered, rel=1e-9)
        assert sum(energies) == pytest.approx(sum(i["requests_j"] for i in intervals), rel=1e-9)
    # the same requests at the same times on both hosts: node-a's GPU draws twice node-b's power
    for i in range(4):
        assert reqs[f"a-{i}"]["energy_j"] > 1.8 * reqs[f"b-{i}"]["energy_j"]


def test_kill_9_and_restart_continue_without_duplicates(tmp_path):
    out = tmp_path / "ledger.jsonl"
    port = free_port()
    ledger = start_ledger(out, port, "--settle-s", "1")
    endpoint = f"http://127.0.0.1:{port}/v1/traces"
    time.sleep(1.0)
    start = time.time()
    time.sleep(1.5)
    first = burst("k", 5, start)
    vllm_spans.send(endpoint, "here", first)
    deadline = time.time() + 20
    while time.time() < deadline and len([r for r in ledger_lines(out) if r["kind"] == "request"]) < 5:
        time.sleep(0.2)
    os.killpg(ledger.pid, signal.SIGKILL)
    ledger.wait(timeout=10)
    with open(out, "a") as f:
        f.write('{"kind": "request", "id": "torn')  # a line cut short by the kill
    ledger = start_ledger(out, port, "--settle-s", "1")
    try:
        vllm_spans.send(endpoint, "here", first)  # the exporter retries what it sent before the crash
        status, health = get(f"http://127.0.0.1:{port}/health", 5)
        time.sleep(1.0)
        status, health = get(f"http://127.0.0.1:{port}/health", 5)
        assert json.loads(health)["counts"].get("duplicate") == 5
    finally:
        ledger.send_signal(signal.SIGTERM)
        ledger.wait(timeout=30)
    text = out.read_text()
    assert text.endswith("\n")
    ids = [r["id"] for r in ledger_lines(out) if r["kind"] == "request"]
    assert sorted(ids) == sorted(r.id for r in first)


def test_off_loopback_needs_an_api_key_and_senders_must_give_it(tmp_path):
    p = subprocess.run(
        [*WATTLM, "ledger", "--out", str(tmp_path / "l.jsonl"), "--otlp", "0.0.0.0:4318"],
        capture_output=True,
        text=True,
        env={**os.environ, "WATTLM_API_KEY": ""},
        timeout=60,
    )
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "--api-key" in p.stderr
    assert not (tmp_path / "l.jsonl").exists()
    port = free_port()
    ledger = start_ledger(tmp_path / "k.jsonl", port, "--api-key", "s3cret")
    try:
        url = f"http://127.0.0.1:{port}/v1/traces"
        assert post(url, b"", "application/x-protobuf") == 401
        # OTLP/JSON, as a collector's otlphttp exporter can send it
        import urllib.request

        body = json.dumps({"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"spans": []}]}]}).encode()
        req = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": "Bearer s3cret"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("application/json")
        vllm_spans.send(url, "h", burst("auth", 1, time.time() - 1), headers={"authorization": "Bearer s3cret"})
        status, metrics = get(f"http://127.0.0.1:{port}/metrics", 5)
        assert 'wattlm_ledger_spans_total{result="' in metrics
    finally:
        ledger.send_signal(signal.SIGTERM)
        ledger.wait(timeout=30)


def test_a_file_that_is_not_a_ledger_is_refused_untouched(tmp_path):
    out = tmp_path / "notes.jsonl"
    out.write_text("these are my notes\n")
    p = subprocess.run(
        [*WATTLM, "ledger", "--out", str(out), "--otlp", f"127.0.0.1:{free_port()}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "not a ledger" in p.stderr
    assert out.read_text() == "these are my notes\n"


def test_forward_sends_each_requests_energy_as_an_otel_metric(tmp_path):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    bodies: list[bytes] = []

    class Capture(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    sink = ThreadingHTTPServer(("127.0.0.1", 0), Capture)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    out = tmp_path / "ledger.jsonl"
    port = free_port()
    ledger = start_ledger(
        out, port, "--settle-s", "5", "--group-by", "tenant", "--forward", f"http://127.0.0.1:{sink.server_port}"
    )
    try:
        time.sleep(1.0)
        start = time.time()
        time.sleep(1.5)
        vllm_spans.send(f"http://127.0.0.1:{port}/v1/traces", "here", burst("f", 3, start))
        deadline = time.time() + 20
        while time.time() < deadline and len([r for r in ledger_lines(out) if r["kind"] == "request"]) < 3:
            time.sleep(0.2)
    finally:
        ledger.send_signal(signal.SIGTERM)  # the forwarder flushes on the way out
        ledger.wait(timeout=30)
        sink.shutdown()
    lines = [r for r in ledger_lines(out) if r["kind"] == "request"]
    assert [r["status"] for r in lines] == ["ok"] * 3, lines
    written = sum(r["energy_j"] for r in lines)
    forwarded = 0.0
    for body in bodies:
        msg = ExportMetricsServiceRequest.FromString(body)
        for rm in msg.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == "wattlm.request.energy":
                        assert m.unit == "J"
                        forwarded = max(forwarded, sum(p.as_double for p in m.sum.data_points))
    assert written > 0 and forwarded == pytest.approx(written, rel=1e-6)


def test_an_exporter_that_stops_answering_makes_its_intervals_and_requests_partial(tmp_path):
    port = free_port()
    exporter = start_exporter(port, "GPU-solo", 100.0)
    lp = free_port()
    out = tmp_path / "ledger.jsonl"
    ledger = start_ledger(out, lp, "--energy-from", f"127.0.0.1:{port}", "--settle-s", "4")
    try:
        time.sleep(1.5)
        start = time.time()
        exporter.terminate()  # the exporter goes away while these requests run
        exporter.wait(timeout=30)
        time.sleep(2.0)
        vllm_spans.send(f"http://127.0.0.1:{lp}/v1/traces", "solo", burst("gone", 2, start))
        deadline = time.time() + 20
        while time.time() < deadline and len([r for r in ledger_lines(out) if r["kind"] == "request"]) < 2:
            time.sleep(0.3)
    finally:
        ledger.send_signal(signal.SIGTERM)
        ledger.wait(timeout=30)
    lines = ledger_lines(out)
    reqs = [r for r in lines if r["kind"] == "request"]
    assert [r["status"] for r in reqs] == ["partial", "partial"], reqs
    assert all("did not answer" in r["reason"] or "lost" in r["reason"] for r in reqs)
    assert any(i["status"] == "partial" for i in lines if i["kind"] == "interval")
