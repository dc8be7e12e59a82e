"""decode_export_request on hand-built OTLP protobufs: columns, redaction, edge cases."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from kprobe.otel.otlp_decode import SPAN_SCHEMA, DecodeError, SpanBatch, decode_export_request

TRACE = bytes(range(16))
SPAN = bytes(range(8, 16))
PARENT = bytes(range(16, 24))


def kv(key: str, **value: object) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(**value))


def request(spans: list[Span], resource: list[KeyValue] | None = None) -> bytes:
    rs = ResourceSpans(
        resource={
            "attributes": resource if resource is not None else [kv("service.name", string_value="pay")]
        },
        scope_spans=[ScopeSpans(scope={"name": "lib"}, spans=spans)],
    )
    return ExportTraceServiceRequest(resource_spans=[rs]).SerializeToString()


def test_columns_of_a_full_span() -> None:
    span = Span(
        trace_id=TRACE,
        span_id=SPAN,
        parent_span_id=PARENT,
        name="charge",
        kind=Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=1_700_000_000_123_456_789,
        end_time_unix_nano=1_700_000_000_124_000_000,
        attributes=[kv("thread.id", int_value=31337), kv("retry", bool_value=True), kv("amt", double_value=1.5)],
        status=Status(code=Status.STATUS_CODE_ERROR, message="declined"),
        events=[Span.Event(name="exception", time_unix_nano=1_700_000_000_123_999_999,
                           attributes=[kv("exception.type", string_value="Declined")])],
    )  # fmt: skip
    resource = [
        kv("service.name", string_value="pay"),
        kv("host.name", string_value="h1"),
        kv("process.pid", int_value=4242),
    ]
    batch = decode_export_request(request([span], resource))
    (row,) = batch.rows()
    assert row["trace_id"] == TRACE.hex() and len(row["trace_id"]) == 32
    assert row["span_id"] == SPAN.hex() and row["parent_span_id"] == PARENT.hex()
    assert (row["ts_ns"], row["end_ns"], row["duration_ns"]) == (
        1_700_000_000_123_456_789,
        1_700_000_000_124_000_000,
        543_211,
    )
    assert (row["name"], row["kind"], row["service"], row["host"], row["pid"], row["tid"]) == (
        "charge",
        3,
        "pay",
        "h1",
        4242,
        31337,
    )
    assert (row["status_code"], row["status_message"]) == (2, "declined")
    attrs = json.loads(row["attributes"])
    assert attrs == {
        "thread.id": 31337,
        "retry": True,
        "amt": 1.5,
        "@resource": {"service.name": "pay", "host.name": "h1", "process.pid": 4242},
        "@scope": "lib",
    }
    assert json.loads(row["events"]) == [
        {
            "name": "exception",
            "ts_ns": 1_700_000_000_123_999_999,
            "attributes": {"exception.type": "Declined"},
        }
    ]


def test_missing_resource_fields_default_and_root_span() -> None:
    span = Span(trace_id=TRACE, span_id=SPAN, name="root", start_time_unix_nano=10, end_time_unix_nano=5)
    (row,) = decode_export_request(request([span], resource=[])).rows()
    assert (row["parent_span_id"], row["service"], row["host"], row["pid"], row["tid"]) == ("", "", "", 0, 0)
    assert row["duration_ns"] == 0  # end < start from a broken clock: never wraps around
    assert json.loads(row["attributes"]) == {"@resource": {}, "@scope": "lib"}
    assert row["events"] == "[]"


def test_pid_given_as_string_is_parsed() -> None:
    span = Span(trace_id=TRACE, span_id=SPAN, name="x")
    (row,) = decode_export_request(request([span], [kv("process.pid", string_value="777")])).rows()
    assert row["pid"] == 777


def test_redaction_everywhere_in_a_span() -> None:
    pan = "4111 1111 1111 1111"
    span = Span(
        trace_id=TRACE,
        span_id=SPAN,
        name=f"charge {pan}",
        attributes=[
            kv("card.number", string_value=pan),
            kv("card.number_int", int_value=4111111111111111),
            kv("card.cvv", string_value="123"),
            kv("CVV2", string_value="123"),
            kv("pin_block", bytes_value=b"\x01\x02"),
            kv("nested", kvlist_value=KeyValueList(values=[kv("track2", string_value=";4111=25"), kv("ok", int_value=1)])),
            kv("list", array_value=ArrayValue(values=[AnyValue(string_value=f"pan {pan}")])),
        ],
        status=Status(code=Status.STATUS_CODE_ERROR, message=f"declined {pan}"),
        events=[Span.Event(name="log", time_unix_nano=1_700_000_000_000_000_007,
                           attributes=[kv("msg", string_value=f"card {pan}"), kv("cvc", string_value="9")])],
    )  # fmt: skip
    resource = [kv("service.name", string_value="pay"), kv("merchant.pin", string_value="0000")]
    batch = decode_export_request(request([span], resource))
    (row,) = batch.rows()
    masked = "411111******1111"
    assert row["name"] == f"charge {masked}"
    assert row["status_message"] == f"declined {masked}"
    attrs = json.loads(row["attributes"])
    assert attrs["card.number"] == masked and attrs["card.number_int"] == masked
    assert attrs["nested"] == {"ok": 1}
    assert attrs["list"] == [f"pan {masked}"]
    assert not {"card.cvv", "CVV2", "pin_block"} & attrs.keys()
    assert attrs["@resource"] == {"service.name": "pay"}
    (event,) = json.loads(row["events"])
    assert event["attributes"] == {"msg": f"card {masked}"}
    assert event["ts_ns"] == 1_700_000_000_000_000_007  # Luhn-valid or not, timestamps are not masked
    blob = json.dumps(row)
    assert "4111 1111" not in blob and "4111111111111111" not in blob
    assert batch.sensitive_dropped == 6  # card.cvv, CVV2, pin_block, nested track2, event cvc, merchant.pin
    assert batch.values_masked == 6  # name, status, 2 attrs, list item, event msg


def test_only_sensitive_attributes_still_yields_valid_json() -> None:
    span = Span(trace_id=TRACE, span_id=SPAN, name="x", attributes=[kv("cvv", string_value="1")])
    (row,) = decode_export_request(request([span])).rows()
    assert json.loads(row["attributes"]) == {"@resource": {"service.name": "pay"}, "@scope": "lib"}


def test_spans_with_bad_ids_are_skipped_and_counted() -> None:
    good = Span(trace_id=TRACE, span_id=SPAN, name="good")
    bad = [
        Span(trace_id=b"\x01" * 8, span_id=SPAN, name="short trace"),
        Span(trace_id=TRACE, span_id=b"", name="no span id"),
        Span(trace_id=TRACE, span_id=SPAN, parent_span_id=b"\x01\x02", name="bad parent"),
    ]
    batch = decode_export_request(request([good, *bad]))
    assert batch.name == ["good"]
    assert batch.invalid_spans == 3


def test_malformed_and_empty_bodies() -> None:
    with pytest.raises(DecodeError):
        decode_export_request(b"\x0a\xff\xff\xff\xff\x0f garbage")
    empty = decode_export_request(b"")
    assert len(empty) == 0 and empty.to_arrow().num_rows == 0


def test_to_arrow_types_and_lengths() -> None:
    spans = [
        Span(trace_id=TRACE, span_id=bytes([i] * 8), name=f"s{i}", start_time_unix_nano=2**63 + i)
        for i in range(5)
    ]
    table = decode_export_request(request(spans)).to_arrow()
    assert table.schema == SPAN_SCHEMA
    assert table.num_rows == 5
    assert table.column("ts_ns").type == pa.uint64()
    assert table.column("ts_ns")[4].as_py() == 2**63 + 4  # full UInt64 range, not int64
    assert isinstance(SpanBatch().to_arrow(), pa.Table)
