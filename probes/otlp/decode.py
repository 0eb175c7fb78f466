"""OTLP trace payloads (ExportTraceServiceRequest) read with the OpenTelemetry protobuf definitions
(`opentelemetry-proto`): protobuf bytes, or OTLP/JSON, whose trace and span ids are hex (protobuf's JSON mapping
wants base64, so they are converted before parsing)."""
from __future__ import annotations

import base64
import json
from typing import Any, Iterator, NamedTuple

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

ID_FIELDS = ("traceId", "spanId", "parentSpanId")


class OtlpDecodeError(ValueError):
    """A payload that is not an ExportTraceServiceRequest (counted and dropped by the intake)."""


class OtlpSpan(NamedTuple):
    """One span with what the intake needs of it; times are wall-clock Unix nanoseconds as sent."""

    name: str
    start_unix_ns: int
    end_unix_ns: int
    trace_id: str  # hex
    span_id: str  # hex
    status_code: int
    attrs: dict[str, Any]
    resource: dict[str, Any]


def value_of(v: AnyValue) -> Any:
    """An AnyValue as a plain Python value (arrays as lists, key-value lists as dicts, bytes as hex)."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value_of(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value_of(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind)


def attributes(kvs) -> dict[str, Any]:
    return {kv.key: value_of(kv.value) for kv in kvs}


def parse_protobuf(data: bytes) -> ExportTraceServiceRequest:
    msg = ExportTraceServiceRequest()
    try:
        msg.ParseFromString(data)
    except DecodeError as exc:
        raise OtlpDecodeError(f"not an OTLP protobuf ExportTraceServiceRequest: {exc}") from None
    return msg


def _hex_ids_to_base64(obj: Any) -> None:
    """OTLP/JSON carries ids as hex; protobuf's JSON parser reads bytes fields as base64."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key in ID_FIELDS and isinstance(value, str):
                try:
                    obj[key] = base64.b64encode(bytes.fromhex(value)).decode()
                except ValueError:
                    raise OtlpDecodeError(f"{key} {value!r} is not hex") from None
            else:
                _hex_ids_to_base64(value)
    elif isinstance(obj, list):
        for item in obj:
            _hex_ids_to_base64(item)


def parse_json(data: bytes) -> ExportTraceServiceRequest:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OtlpDecodeError(f"not JSON: {exc}") from None
    _hex_ids_to_base64(doc)
    msg = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(doc, msg, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise OtlpDecodeError(f"not an OTLP/JSON ExportTraceServiceRequest: {exc}") from None
    return msg


def spans(msg: ExportTraceServiceRequest) -> Iterator[OtlpSpan]:
    """Every span of a request, with its resource's attributes."""
    for rs in msg.resource_spans:
        resource = attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                yield OtlpSpan(s.name, s.start_time_unix_nano, s.end_time_unix_nano, s.trace_id.hex(),
                               s.span_id.hex(), s.status.code, attributes(s.attributes), resource)
