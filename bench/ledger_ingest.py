"""What `wattlm ledger` costs: spans ingested per second on one core, and its CPU at 100 spans/s.

    python bench/ledger_ingest.py [--seconds 20] [--out bench/results/ledger_ingest.json]

The ledger runs as a user runs it (`wattlm ledger`, this machine's meter, --settle-s 5) and receives
OTLP/HTTP protobuf bodies of vLLM-shaped spans, each a request that ended a moment ago, so every span
is settled and written. Its CPU time comes from /proc (psutil) over each phase: idle (no spans);
100 spans/s in bodies of 100, one a second (the OpenTelemetry SDK's batch span processor, which vLLM
uses, sends up to 512 spans every 5 s; a collector's batch processor about once a second); the same
rate in bodies of 10 (a sender that flushes ten times a second); then as fast as one sender can post.
"""

from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def body(first_id: int, now: float, per_body: int) -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(KeyValue(key="host.name", value=AnyValue(string_value="replica-0")))
    ss = rs.scope_spans.add()
    for i in range(per_body):
        arrival = now - 0.8 + 0.001 * i
        s = ss.spans.add(
            name="llm_request", start_time_unix_nano=int(arrival * 1e9), end_time_unix_nano=int((arrival + 0.7) * 1e9)
        )
        s.span_id = (first_id + i).to_bytes(8, "big")
        for k, v in (
            ("gen_ai.request.id", f"cmpl-{first_id + i}"),
            ("gen_ai.response.model", "meta-llama/Llama-3.1-8B-Instruct"),
        ):
            s.attributes.append(KeyValue(key=k, value=AnyValue(string_value=v)))
        for k, n in (("gen_ai.usage.prompt_tokens", 200 + i), ("gen_ai.usage.completion_tokens", 64)):
            s.attributes.append(KeyValue(key=k, value=AnyValue(int_value=n)))
        for k, x in (
            ("gen_ai.latency.time_in_queue", 0.01),
            ("gen_ai.latency.time_to_first_token", 0.1),
            ("gen_ai.latency.time_in_model_prefill", 0.09),
            ("gen_ai.latency.time_in_model_decode", 0.6),
            ("gen_ai.latency.e2e", 0.7),
        ):
            s.attributes.append(KeyValue(key=k, value=AnyValue(double_value=x)))
    return req.SerializeToString()


def main() -> None:
    import psutil

    from tests.load.servers import free_port, wait_until_serving
    from wattlm.cpuinfo import first_processor, model_name

    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ledger_ingest.json")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "ledger-ingest")
    args = parser.parse_args()
    args.runs.mkdir(parents=True, exist_ok=True)
    out = args.runs / "ledger.jsonl"
    out.unlink(missing_ok=True)
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "wattlm",
        "ledger",
        "--out",
        str(out),
        "--otlp",
        f"127.0.0.1:{port}",
        "--settle-s",
        "5",
    ]
    with open(args.runs / "ledger.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        why = wait_until_serving(f"http://127.0.0.1:{port}/health", proc, 60.0, args.runs / "ledger.log")
        if why:
            raise SystemExit(f"wattlm ledger did not start: {why}")
        me = psutil.Process(proc.pid)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        next_id = 0

        def post(per_body: int) -> None:
            nonlocal next_id, conn
            data = body(next_id, time.time(), per_body)
            try:
                conn.request("POST", "/v1/traces", data, {"Content-Type": "application/x-protobuf"})
                r = conn.getresponse()
            except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)  # the server closed an idle one
                conn.request("POST", "/v1/traces", data, {"Content-Type": "application/x-protobuf"})
                r = conn.getresponse()
            r.read()
            if r.status != 200:
                raise SystemExit(f"the ledger answered {r.status}")
            next_id += per_body

        def phase(spans_per_s: float | None, per_body: int) -> dict:
            c0, t0, sent0 = me.cpu_times(), time.monotonic(), next_id
            while (now := time.monotonic()) - t0 < args.seconds:
                if spans_per_s is None:
                    post(per_body)
                    continue
                due = t0 + (next_id - sent0) / spans_per_s
                if now >= due:
                    post(per_body)
                else:
                    time.sleep(min(0.01, due - now))
            c1, t1 = me.cpu_times(), time.monotonic()
            cpu_s = (c1.user + c1.system) - (c0.user + c0.system)
            spans = next_id - sent0
            return {
                "seconds": t1 - t0,
                "spans_per_body": per_body,
                "spans": spans,
                "spans_per_s": spans / (t1 - t0),
                "cpu_s": cpu_s,
                "cores": cpu_s / (t1 - t0),
            }

        idle = phase(1e-6, 1)  # one span, then nothing: the meter's sampler and the settling thread
        at_100 = phase(100.0, 100)
        at_100_small = phase(100.0, 10)
        flat_out = phase(None, 100)
        time.sleep(7)  # the last spans settle
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    written = sum(1 for x in lines if x.get("kind") == "request" and x["status"] == "ok")
    import importlib.util

    fast = all(importlib.util.find_spec(m) is not None for m in ("httptools", "uvloop"))
    result = {
        "what": "wattlm ledger: CPU per span received, settled and written (OTLP/HTTP protobuf)",
        "cpu": model_name(first_processor()),
        # uvicorn picks httptools and uvloop where installed (uvicorn[standard]), else h11 and asyncio's loop
        "http": "httptools + uvloop" if fast else "h11 + asyncio",
        "idle": idle,
        "at_100_spans_per_s": at_100 | {"extra_cores": at_100["cores"] - idle["cores"]},
        "at_100_spans_per_s_in_bodies_of_10": at_100_small | {"extra_cores": at_100_small["cores"] - idle["cores"]},
        "flat_out": flat_out | {"spans_per_cpu_s": flat_out["spans"] / max(flat_out["cpu_s"], 1e-9)},
        "requests_written_ok": written,
        "requests_sent": next_id,
        "target_cores_at_100": 0.02,
        "met": at_100["cores"] <= 0.02,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
