"""The ledger's parts on small inputs: OTLP decoding, vLLM's span mapping, settling with a hand clock
(conservation, late / early / future / duplicate / unknown-host spans, lost readings), the file."""

from __future__ import annotations

import json

import pytest

from tests.fakes.sources import ScriptedSource
from tests.fakes.vllm_spans import Request, attributes
from wattlm.jsonlog import Ledger, read_ledger
from wattlm.ledger.hosts import Hosts
from wattlm.ledger.metrics import MAX_VALUES, LedgerMetrics
from wattlm.ledger.otlp import BadPayload, SpanData, decode
from wattlm.ledger.settle import SeenIds, Settler
from wattlm.ledger.spans import is_request, to_timeline

pytest.importorskip("opentelemetry.proto")


def export_request(spans: list[tuple[str, dict, int, int]], host: str = "node-a"):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    def kv(k, v):
        if isinstance(v, str):
            return KeyValue(key=k, value=AnyValue(string_value=v))
        if isinstance(v, int):
            return KeyValue(key=k, value=AnyValue(int_value=v))
        return KeyValue(key=k, value=AnyValue(double_value=v))

    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(kv("host.name", host))
    ss = rs.scope_spans.add()
    for name, attrs, start, end in spans:
        s = ss.spans.add(name=name, start_time_unix_nano=start, end_time_unix_nano=end, span_id=b"\x01" * 8)
        s.attributes.extend(kv(k, v) for k, v in attrs.items())
    return req


def test_decode_protobuf_and_json_alike():
    from google.protobuf import json_format

    r = Request("req-1", 100.0, 0.5, 0.25, 2.0, 120, 40)
    msg = export_request([("llm_request", attributes(r), int(100e9), int(103e9))])
    a = decode(msg.SerializeToString(), "application/x-protobuf")
    b = decode(json_format.MessageToJson(msg).encode(), "application/json")
    assert len(a) == len(b) == 1
    assert a[0].attributes == b[0].attributes
    assert a[0].resource["host.name"] == "node-a" and a[0].start_ns == int(100e9)


@pytest.mark.parametrize(
    ("body", "kind", "words"),
    [
        (b"\xff\x00not protobuf at all", "application/x-protobuf", "not an OTLP trace export"),
        (b'{"resourceSpans": [', "application/json", "not an OTLP trace export"),
        (b'{"resourceSpans": 3}', "application/json", "not an OTLP trace export"),
        (b"x", "text/plain", "is not OTLP"),
    ],
)
def test_malformed_bodies_say_what_is_wrong(body, kind, words):
    with pytest.raises(BadPayload, match=words):
        decode(body, kind)


def span(r: Request, host: str = "node-a", **over) -> SpanData:
    attrs = {**attributes(r), **over}
    return SpanData(
        "llm_request", int(r.arrival_s * 1e9), int((r.end_s + 0.002) * 1e9), attrs, {"host.name": host}, "ab"
    )


def test_vllm_span_gives_queue_prompt_reading_and_decode():
    r = Request("req-7", 1000.0, 0.5, 0.25, 2.0, 120, 40)
    m = to_timeline(span(r), "tenant")
    t = m.timeline
    assert t is not None and m.reason == ""
    assert t.id == "req-7" and t.source == "spans" and t.host == "node-a"
    assert t.arrival_s == pytest.approx(1000.0)
    assert t.prefill_start_s == pytest.approx(1000.5)
    assert t.first_token_s == pytest.approx(1000.75)
    assert t.end_s == pytest.approx(1002.75)
    assert (t.prompt_tokens, t.output_tokens) == (120, 40)
    assert m.labels == {"tenant": "acme"} and m.model.startswith("meta-llama")


def test_spans_without_counts_or_times_are_named():
    r = Request("x", 10.0, 0.1, 0.1, 1.0, 10, 5)
    s = span(r)
    no_ttft = SpanData(
        s.name,
        s.start_ns,
        s.end_ns,
        {k: v for k, v in s.attributes.items() if "first_token" not in k},
        s.resource,
        "cd",
    )
    assert to_timeline(no_ttft).reason.startswith("no_times")
    no_tokens = SpanData(s.name, s.start_ns, s.end_ns, {"gen_ai.usage.completion_tokens": 3}, s.resource, "ef")
    assert to_timeline(no_tokens).reason.startswith("no_tokens")
    assert not is_request(SpanData("GET /health", 0, 1, {"http.method": "GET"}, {}, "00"))


class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


def hosts(*names: str) -> Hosts:
    return Hosts([(n, [ScriptedSource(key=f"fake:{n}")]) for n in names], {}, 0.1)


def fill(h, start: float, end: float, watts: float, gap_at: float | None = None) -> None:
    t, gaps = start, 0
    while t <= end + 1e-9:
        if gap_at is not None and abs(t - gap_at) < 1e-9:
            gaps += 1
        h.series.add(t, watts * (t - start), gaps)
        t = round(t + 0.5, 6)


def settler(tmp_path, hs: Hosts, clock: Clock, settle_s: float = 5.0):
    ledger = Ledger(tmp_path / "ledger.jsonl")
    return Settler(hs, ledger, SeenIds(), settle_s=settle_s, clock=clock), ledger


def lines(tmp_path, kind):
    return [r for r in read_ledger(tmp_path / "ledger.jsonl") if r["kind"] == kind]


def test_settling_conserves_energy_and_charges_each_request_once(tmp_path):
    hs, clock = hosts("node-a"), Clock(1000.0)
    s, ledger = settler(tmp_path, hs, clock)
    fill(hs.hosts["node-a"], 1000.0, 1100.0, 50.0)
    reqs = [Request(f"r{i}", 1010.0 + 3 * i, 0.2, 0.5, 4.0, 100 + 10 * i, 20 + i) for i in range(8)]
    clock.t = 1050.0
    for r in reqs:
        assert s.add(to_timeline(span(r)), "node-a") == "pending"
    for now in (1020.0, 1033.0, 1040.0, 1060.0):  # several intervals, requests straddling them
        clock.t = now
        s.tick()
    ledger.close()
    got = {r["id"]: r for r in lines(tmp_path, "request")}
    assert set(got) == {r.id for r in reqs} and all(r["status"] == "ok" for r in got.values())
    intervals = lines(tmp_path, "interval")
    assert len(intervals) >= 3
    metered = sum(i["energy_j"] for i in intervals)
    assert metered == pytest.approx(50.0 * (1055.0 - 1000.0))
    assert sum(i["requests_j"] + i["idle_j"] for i in intervals) == pytest.approx(metered)
    assert sum(r["energy_j"] for r in got.values()) == pytest.approx(sum(i["requests_j"] for i in intervals))
    assert all(r["prefill_j"] > 0 and r["decode_j"] > 0 for r in got.values())


def test_late_early_future_duplicate_and_unknown_host_spans_are_written_unattributed(tmp_path):
    hs, clock = hosts("node-a", "node-b"), Clock(1000.0)
    s, ledger = settler(tmp_path, hs, clock)
    for h in hs.hosts.values():
        fill(h, 1000.0, 1100.0, 10.0)
    clock.t = 1060.0
    assert s.add(to_timeline(span(Request("ok", 1010.0, 0.1, 0.1, 1.0, 10, 5))), "node-a") == "pending"
    s.tick()  # settles up to 1055
    out = {
        "late": s.add(to_timeline(span(Request("late", 1020.0, 0.1, 0.1, 1.0, 10, 5))), "node-a"),
        "early": s.add(to_timeline(span(Request("early", 990.0, 0.1, 0.1, 1.0, 10, 5))), "node-a"),
        "future": s.add(to_timeline(span(Request("future", 1058.0, 0.1, 0.1, 30.0, 10, 5))), "node-a"),
        "nohost": s.add(to_timeline(span(Request("nohost", 1058.0, 0.1, 0.1, 1.0, 10, 5), host="node-z")), "node-z"),
    }
    assert set(out.values()) == {"unattributed"}
    assert s.add(to_timeline(span(Request("late", 1020.0, 0.1, 0.1, 1.0, 10, 5))), "node-a") == "duplicate"
    ledger.close()
    reasons = {r["id"]: r["reason"] for r in lines(tmp_path, "request") if r["status"] == "unattributed"}
    assert reasons["late"].startswith("late:") and "--settle-s" in reasons["late"]
    assert reasons["early"].startswith("before_start:")
    assert reasons["future"].startswith("future:")
    assert reasons["nohost"].startswith("no_host:") and "--host-map" in reasons["nohost"]
    ids = [r["id"] for r in lines(tmp_path, "request")]
    assert len(ids) == len(set(ids))


def test_lost_readings_make_the_interval_and_its_requests_partial(tmp_path):
    hs, clock = hosts("node-a"), Clock(1000.0)
    s, ledger = settler(tmp_path, hs, clock)
    fill(hs.hosts["node-a"], 1000.0, 1100.0, 10.0, gap_at=1012.0)
    clock.t = 1030.0
    s.add(to_timeline(span(Request("hit", 1010.0, 0.1, 0.5, 3.0, 10, 5))), "node-a")
    s.add(to_timeline(span(Request("clear", 1016.0, 0.1, 0.5, 3.0, 10, 5))), "node-a")
    s.tick()
    ledger.close()
    got = {r["id"]: r for r in lines(tmp_path, "request")}
    assert got["hit"]["status"] == "partial" and "lost" in got["hit"]["reason"]
    assert got["clear"]["status"] == "ok"
    assert lines(tmp_path, "interval")[0]["status"] == "partial"


def test_a_final_settle_marks_requests_cut_by_the_stop(tmp_path):
    hs, clock = hosts("node-a"), Clock(1000.0)
    s, ledger = settler(tmp_path, hs, clock)
    fill(hs.hosts["node-a"], 1000.0, 1020.0, 10.0)
    clock.t = 1024.0
    s.add(to_timeline(span(Request("cut", 1015.0, 0.1, 0.5, 8.0, 10, 5))), "node-a")
    s.add(to_timeline(span(Request("after", 1021.0, 0.1, 0.5, 2.0, 10, 5))), "node-a")  # after the last reading
    s.tick(final=True)
    ledger.close()
    cut, after = lines(tmp_path, "request")
    assert cut["status"] == "partial" and "stopped" in cut["reason"] and cut["energy_j"] > 0
    assert after["id"] == "after" and after["status"] == "unattributed" and after["reason"].startswith("stopped:")


def test_a_torn_last_line_is_cut_and_the_next_starts_whole(tmp_path):
    p = tmp_path / "l.jsonl"
    p.write_text(json.dumps({"kind": "request", "id": "a"}) + "\n" + '{"kind": "requ')
    ledger = Ledger(p)
    ledger.write({"kind": "request", "id": "b"})
    ledger.close()
    assert [r["id"] for r in read_ledger(p)] == ["a", "b"]


def test_metrics_keep_label_sets_bounded():
    m = LedgerMetrics("tenant.id")
    for i in range(MAX_VALUES + 20):
        m.request({"status": "ok", "model": "m", "labels": {"tenant.id": f"t{i}"}, "energy_j": 1.0})
    from prometheus_client import generate_latest

    text = generate_latest(m.registry).decode()
    assert 'tenant_id="other"' in text
    assert text.count("wattlm_request_energy_joules_total{") == MAX_VALUES + 1
