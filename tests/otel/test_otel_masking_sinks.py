"""Card data in every part of an OTLP export, through the decoder and through the real SDK,
receiver and chDB store (issue 18: all 7 public test PANs were found unmasked in `spans`).

Every place a client can put text is tried: span name, status message, attribute values
(string, int, bytes, arrays, nested kvlists), attribute *keys*, event names and attributes, the
instrumentation scope name, resource attribute values and keys.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from card_shapes import TEST_PANS, corpus, leaked, pan_text, secret_text, track2, track_leaked
from hypothesis import HealthCheck, given, settings
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from kprobe.otel.otlp_decode import decode_export_request

TRACE = bytes(range(16))
SPAN = bytes(range(8, 16))


def kv(key: str, **value: object) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(**value))


def _request_everywhere(text: str) -> bytes:
    """One span with ``text`` in every field a client controls."""
    span = Span(
        trace_id=TRACE, span_id=SPAN, name=f"charge {text}",
        attributes=[
            kv("note", string_value=text),
            kv("body", bytes_value=text.encode()),
            kv("list", array_value=ArrayValue(values=[AnyValue(string_value=text), AnyValue(bytes_value=text.encode())])),
            kv("nested", kvlist_value=KeyValueList(values=[kv("inner", string_value=text), kv(text, int_value=1)])),
            kv(f"card_{text}", string_value="key holds it"),
        ],
        status=Status(code=Status.STATUS_CODE_ERROR, message=text),
        events=[Span.Event(name=text, time_unix_nano=1_765_098_312_345_678_901, attributes=[kv("msg", string_value=text)])],
    )  # fmt: skip
    rs = ResourceSpans(
        resource={"attributes": [kv("service.name", string_value="pay"), kv("merchant", string_value=text),
                                 kv(text, string_value="resource key")]},
        scope_spans=[ScopeSpans(scope={"name": f"lib {text}"}, spans=[span])],
    )  # fmt: skip
    return ExportTraceServiceRequest(resource_spans=[rs]).SerializeToString()


def _stored_text(row: dict) -> str:
    """Everything of a stored row as text (``leaked`` also decodes the base64 of bytes values)."""
    return json.dumps(row, ensure_ascii=False)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pan_text())
def test_decoder_masks_every_field(case: tuple[str, str]) -> None:
    pan, text = case
    (row,) = decode_export_request(_request_everywhere(text)).rows()
    assert not leaked(_stored_text(row), pan), (text, row)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(secret_text())
def test_decoder_drops_sensitive_values_written_into_text(case: tuple[str, str]) -> None:
    value, text = case
    (row,) = decode_export_request(_request_everywhere(text)).rows()
    assert f"{value}" not in json.loads(row["attributes"])["note"], (text, row)


def test_decoder_sensitive_keys_bytes_and_track_data() -> None:
    pan = "4111111111111111"
    span = Span(trace_id=TRACE, span_id=SPAN, name="swipe", attributes=[
        kv("cvvCode", string_value="123"), kv("securityCode", int_value=123), kv("card.cvv2", string_value="123"),
        kv("user.pin_number", string_value="1234"), kv("card.pan", string_value=pan),
        kv("card.track", string_value=track2(pan)), kv("raw", string_value=f"t2 {track2(pan)} ok"),
        kv("payload", bytes_value=f'{{"card":"{pan}"}}'.encode()),
    ])  # fmt: skip
    batch = decode_export_request(ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource={"attributes": [kv("service.name", string_value="pay")]},
        scope_spans=[ScopeSpans(scope={"name": "lib"}, spans=[span])])]).SerializeToString())  # fmt: skip
    (row,) = batch.rows()
    attrs = json.loads(row["attributes"])
    assert not {"cvvCode", "securityCode", "card.cvv2", "user.pin_number", "card.pan", "card.track"} & attrs.keys()
    assert attrs["raw"] == "t2 [track data removed] ok" and not track_leaked(row["attributes"])
    assert base64.b64decode(attrs["payload"]) == b'{"card":"411111******1111"}'
    assert batch.sensitive_dropped == 6


# -- end to end: the real SDK -> kprobe's OTLP receiver -> the chDB `spans` table ------------------


@pytest.fixture
def stored(tmp_path: Path):
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import Status as SdkStatus
    from opentelemetry.trace import StatusCode

    from kprobe.otel.receiver import OtlpReceiver
    from kprobe.otel.span_writer import SpanWriter
    from kprobe.sinks.chdb_store import ChdbStore

    store = ChdbStore(tmp_path / "store")
    rx = OtlpReceiver(SpanWriter(store), host="127.0.0.1", grpc_port=0, http_port=0)
    rx.start()
    shapes = corpus(120) + [(p, f"plain {p}") for p in TEST_PANS] + [(p, track2(p)) for p in TEST_PANS[:3]]
    try:
        exporters = {"grpc": lambda: GrpcExporter(endpoint=rx.grpc_endpoint, insecure=True, timeout=30),
                     "http": lambda: HttpExporter(endpoint=rx.http_endpoint, timeout=30)}
        for transport, new_exporter in exporters.items():
            for i in range(0, len(shapes), 20):
                batch = shapes[i : i + 20]
                provider = TracerProvider(resource=Resource.create(
                    {"service.name": "payment-handler", "process.pid": os.getpid(),
                     "merchant.terminal": batch[0][1], batch[1][1]: "resource key"}))  # fmt: skip
                provider.add_span_processor(SimpleSpanProcessor(new_exporter()))
                tracer = provider.get_tracer(f"scope {batch[2][1]}")
                for _, text in batch:
                    with tracer.start_as_current_span(f"{transport} {text}") as span:
                        span.set_attribute("card.number", text)
                        span.set_attribute("http.request.body", text.encode())
                        span.set_attribute(f"k {text}", "key holds it")
                        span.set_attribute("cvvCode", "123")
                        span.set_attribute("user.pin_number", "1234")
                        span.add_event(f"event {text}", {"detail": text})
                        span.set_status(SdkStatus(StatusCode.ERROR, f"declined {text}"))
                provider.shutdown()
        yield shapes, store.query_rows("SELECT * FROM spans")
    finally:
        rx.stop()
        store.close()


def test_sdk_spans_stored_in_chdb_hold_no_card_data(stored) -> None:  # noqa: ANN001
    shapes, rows = stored
    assert len(rows) == 2 * len(shapes)
    texts = [_stored_text(r) for r in rows]
    leaks = [(pan, t[:200]) for t in texts for pan in {p for p, _ in shapes} if leaked(t, pan)]
    assert not leaks, leaks[:5]
    assert not [t for t in texts if track_leaked(t)]
    for r in rows:
        attrs = json.loads(r["attributes"])
        assert "cvvCode" not in attrs and "user.pin_number" not in attrs
