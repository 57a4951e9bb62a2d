"""OTLP/HTTP trace bodies (protobuf or JSON) decoded with the generated types of opentelemetry-proto,
flattened to what the ledger needs: each span's name, times, attributes and its resource's attributes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInputError

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


class BadPayload(InvalidInputError):
    """The body is not an OTLP trace export: answer 400."""


@dataclass(frozen=True)
class SpanData:
    name: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    span_id: str


def _messages() -> tuple[Any, Any, Any]:
    try:
        from google.protobuf import json_format
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    except ImportError as e:
        raise InvalidInputError("receiving OTLP needs opentelemetry-proto: pip install 'wattlm[otel]'") from e
    return trace_service_pb2.ExportTraceServiceRequest, trace_service_pb2.ExportTraceServiceResponse, json_format


def check_available() -> None:
    _messages()


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind in ("string_value", "bool_value", "int_value", "double_value"):
        return getattr(v, kind)
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return None  # kvlist and bytes: not used by any mapping


def _attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


def decode(body: bytes, content_type: str) -> list[SpanData]:
    """Every span in one export request; raises BadPayload with what is wrong."""
    request_type, _, json_format = _messages()
    message = request_type()
    kind = content_type.split(";")[0].strip().lower()
    try:
        if kind == JSON:
            json_format.Parse(body.decode("utf-8"), message, ignore_unknown_fields=True)
        elif kind in (PROTOBUF, "application/protobuf", ""):
            message.ParseFromString(body)
        else:
            raise BadPayload(f"content type {kind!r} is not OTLP: send {PROTOBUF} or {JSON}")
    except BadPayload:
        raise
    except Exception as e:  # protobuf's DecodeError, json_format's ParseError, bad UTF-8
        raise BadPayload(f"the body is not an OTLP trace export ({kind or PROTOBUF}): {type(e).__name__}: {e}") from e
    spans = []
    for rs in message.resource_spans:
        resource = _attrs(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                spans.append(
                    SpanData(
                        s.name,
                        s.start_time_unix_nano,
                        s.end_time_unix_nano,
                        _attrs(s.attributes),
                        resource,
                        s.span_id.hex(),
                    )
                )
    return spans


def response(content_type: str, rejected: int = 0, message: str = "") -> tuple[bytes, str]:
    """The OTLP success answer in the request's encoding (partial success when spans were rejected)."""
    _, response_type, json_format = _messages()
    out = response_type()
    if rejected:
        out.partial_success.rejected_spans = rejected
        out.partial_success.error_message = message
    if content_type.split(";")[0].strip().lower() == JSON:
        return json_format.MessageToJson(out).encode(), JSON
    return out.SerializeToString(), PROTOBUF
