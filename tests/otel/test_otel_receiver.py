"""OtlpReceiver end to end with the real OpenTelemetry SDK exporters (gRPC and HTTP)."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import ProcessResourceDetector, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from kprobe.otel.grpc_server import METHOD, SERVICE
from kprobe.otel.otlp_decode import SpanBatch
from kprobe.otel.receiver import OtlpReceiver, ReceiverBindError

TIMEOUT = 5.0


def record_spans(resource: Resource) -> Sequence[ReadableSpan]:
    """A small payment trace: server root -> client child that fails with an exception."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("kprobe.tests")
    with tracer.start_as_current_span("POST /payments", kind=SpanKind.SERVER) as root:
        root.set_attribute("thread.id", threading.get_native_id())
        with tracer.start_as_current_span("acquirer.authorize", kind=SpanKind.CLIENT) as child:
            child.set_attribute("card.number", "4111 1111 1111 1111")
            child.set_attribute("card.cvv", "123")
            child.set_attribute("amount.minor", 1250)
            child.record_exception(TimeoutError("acquirer did not answer"))
            child.set_status(Status(StatusCode.ERROR, "acquirer timeout"))
    provider.shutdown()
    spans = memory.get_finished_spans()
    assert len(spans) == 2
    return spans


def resource_explicit() -> Resource:
    return Resource.create({"service.name": "payments", "host.name": "pay-01", "process.pid": os.getpid()})


def resource_detected() -> Resource:
    """process.pid from the SDK's own ProcessResourceDetector."""
    return Resource.create({"service.name": "payments", "host.name": "pay-01"}).merge(
        ProcessResourceDetector().detect()
    )


def make_exporter(transport: str, rx: OtlpReceiver, use_gzip: bool = False) -> SpanExporter:
    if transport == "grpc":
        return GrpcExporter(
            endpoint=rx.grpc_endpoint,
            insecure=True,
            timeout=TIMEOUT,
            compression=grpc.Compression.Gzip if use_gzip else grpc.Compression.NoCompression,
        )
    return HttpExporter(
        endpoint=rx.http_endpoint,
        timeout=TIMEOUT,
        compression=HttpCompression.Gzip if use_gzip else HttpCompression.NoCompression,
    )


def export(transport: str, rx: OtlpReceiver, spans: Sequence[ReadableSpan], use_gzip: bool = False) -> None:
    exporter = make_exporter(transport, rx, use_gzip)
    try:
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()


def post(port: int, body: bytes, headers: dict[str, str], path: str = "/v1/traces") -> tuple[int, Any, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def grpc_raw_export(rx: OtlpReceiver, body: bytes) -> bytes:
    """Unary Export call with raw bytes: lets a test send what no SDK would."""
    with grpc.insecure_channel(rx.grpc_endpoint) as channel:
        call = channel.unary_unary(f"/{SERVICE}/{METHOD}")
        return call(body, timeout=TIMEOUT)  # type: ignore[no-any-return]


PROTOBUF = {"Content-Type": "application/x-protobuf"}


class Collector:
    """Thread-safe ``on_spans`` sink; can be told to fail to exercise retryable errors."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.batches: list[SpanBatch] = []
        self.fail = False

    def __call__(self, batch: SpanBatch) -> None:
        if self.fail:
            raise RuntimeError("store is down")
        with self._cond:
            self.batches.append(batch)
            self._cond.notify_all()

    def rows(self) -> list[dict[str, Any]]:
        with self._cond:
            return [row for b in self.batches for row in b.rows()]

    def wait_rows(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Block until at least ``n`` spans arrived (never forever)."""
        with self._cond:
            ok = self._cond.wait_for(lambda: sum(map(len, self.batches)) >= n, timeout)
        rows = self.rows()
        assert ok, f"timed out waiting for {n} spans, got {len(rows)}"
        return rows


@pytest.fixture
def collector() -> Collector:
    return Collector()


@pytest.fixture
def receiver(collector: Collector) -> Iterator[OtlpReceiver]:
    rx = OtlpReceiver(collector, host="127.0.0.1", grpc_port=0, http_port=0)
    rx.start()
    try:
        yield rx
    finally:
        rx.stop()


@pytest.fixture
def good_body() -> bytes:
    return encode_spans(record_spans(resource_explicit())).SerializeToString()


# -- happy path, both transports ---------------------------------------------------------------


@pytest.mark.parametrize("transport", ["grpc", "http"])
@pytest.mark.parametrize("resource_kind", ["explicit", "detected"])
def test_sdk_spans_arrive_intact(
    transport: str, resource_kind: str, receiver: OtlpReceiver, collector: Collector
) -> None:
    resource = resource_explicit() if resource_kind == "explicit" else resource_detected()
    spans = record_spans(resource)
    export(transport, receiver, spans)

    rows = {r["span_id"]: r for r in collector.wait_rows(2)}
    assert len(rows) == 2
    for sent in spans:
        ctx = sent.get_span_context()
        got = rows[f"{ctx.span_id:016x}"]
        assert got["trace_id"] == f"{ctx.trace_id:032x}"
        assert got["name"] == sent.name
        assert got["parent_span_id"] == (f"{sent.parent.span_id:016x}" if sent.parent else "")
        assert got["kind"] == sent.kind.value + 1  # SDK enum starts at INTERNAL=0, OTLP at INTERNAL=1
        assert sent.start_time is not None and sent.end_time is not None
        assert abs(got["ts_ns"] - sent.start_time) <= 1_000
        assert abs(got["end_ns"] - sent.end_time) <= 1_000
        assert abs(got["duration_ns"] - (sent.end_time - sent.start_time)) <= 1_000
        assert (got["service"], got["host"], got["pid"]) == ("payments", "pay-01", os.getpid())

    root, child = (rows[f"{s.get_span_context().span_id:016x}"] for s in spans[::-1])
    assert root["tid"] == threading.get_native_id()
    assert child["parent_span_id"] == root["span_id"]
    assert (root["status_code"], child["status_code"]) == (0, 2)
    assert child["status_message"] == "acquirer timeout"
    (event,) = json.loads(child["events"])
    assert event["name"] == "exception"
    assert event["attributes"]["exception.message"] == "acquirer did not answer"

    # Sensitive data: PAN masked, CVV gone, and both counted.
    attrs = json.loads(child["attributes"])
    assert attrs["card.number"] == "411111******1111"
    assert "card.cvv" not in attrs
    assert attrs["amount.minor"] == 1250
    assert attrs["@resource"]["process.pid"] == os.getpid()
    stats = receiver.stats()
    assert stats[f"{transport}_requests"] == 1
    assert stats[f"{transport}_spans_accepted"] == 2
    assert stats["sensitive_attributes_dropped"] == 1
    assert stats["values_masked"] == 1


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_gzip_compressed_exports(transport: str, receiver: OtlpReceiver, collector: Collector) -> None:
    export(transport, receiver, record_spans(resource_explicit()), use_gzip=True)
    assert {r["name"] for r in collector.wait_rows(2)} == {"POST /payments", "acquirer.authorize"}


# -- malformed input ---------------------------------------------------------------------------


def test_malformed_http_body_is_400_then_service_continues(
    receiver: OtlpReceiver, collector: Collector, good_body: bytes
) -> None:
    status, headers, body = post(receiver.http_port or 0, b"\x0a\xff\xff\xff\xff\x0f not protobuf", PROTOBUF)
    assert status == 400
    assert b"not an OTLP ExportTraceServiceRequest" in body  # google.rpc.Status carrying the reason
    assert receiver.stats()["http_rejected"] == 1

    status, _, _ = post(receiver.http_port or 0, good_body, PROTOBUF)
    assert status == 200
    export("http", receiver, record_spans(resource_explicit()))
    assert len(collector.wait_rows(4)) == 4
    stats = receiver.stats()
    assert (stats["http_requests"], stats["http_rejected"], stats["http_spans_accepted"]) == (3, 1, 4)


def test_http_json_gzip_and_framing_errors(receiver: OtlpReceiver, good_body: bytes) -> None:
    port = receiver.http_port or 0
    status, _, body = post(port, b"{}", {"Content-Type": "application/json"})
    assert status == 415 and b"OTLP/JSON is not supported" in body
    status, _, body = post(port, b"not gzip", {**PROTOBUF, "Content-Encoding": "gzip"})
    assert status == 400 and b"gzip" in body
    status, _, _ = post(port, gzip.compress(good_body), {**PROTOBUF, "Content-Encoding": "gzip"})
    assert status == 200
    status, _, _ = post(port, good_body, PROTOBUF, path="/v1/metrics")
    assert status == 404
    assert receiver.stats()["http_rejected"] == 2


def test_malformed_grpc_is_invalid_argument(
    receiver: OtlpReceiver, collector: Collector, good_body: bytes
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        grpc_raw_export(receiver, b"\x0a\xff\xff\xff\xff\x0f not protobuf")
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert receiver.stats()["grpc_rejected"] == 1
    grpc_raw_export(receiver, good_body)  # still serving
    assert len(collector.wait_rows(2)) == 2


def test_spans_with_bad_ids_get_partial_success(receiver: OtlpReceiver, collector: Collector) -> None:
    request = encode_spans(record_spans(resource_explicit()))
    request.resource_spans[0].scope_spans[0].spans[0].trace_id = b"short"
    status, _, body = post(receiver.http_port or 0, request.SerializeToString(), PROTOBUF)
    assert status == 200
    response = ExportTraceServiceResponse.FromString(body)
    assert response.partial_success.rejected_spans == 1
    assert "trace_id must be 16 bytes" in response.partial_success.error_message
    assert len(collector.wait_rows(1)) == 1
    stats = receiver.stats()
    assert (stats["http_invalid_spans"], stats["http_spans_accepted"]) == (1, 1)


# -- sink failures are retryable, never silent -------------------------------------------------


def test_raising_sink_gives_503_and_unavailable(
    receiver: OtlpReceiver, collector: Collector, good_body: bytes
) -> None:
    collector.fail = True
    status, headers, _ = post(receiver.http_port or 0, good_body, PROTOBUF)
    assert status == 503
    assert headers["Retry-After"] == "1"
    with pytest.raises(grpc.RpcError) as info:
        grpc_raw_export(receiver, good_body)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    stats = receiver.stats()
    assert (stats["http_sink_errors"], stats["grpc_sink_errors"]) == (1, 1)
    assert stats["http_spans_accepted"] == stats["grpc_spans_accepted"] == 0

    collector.fail = False  # the retry succeeds
    assert post(receiver.http_port or 0, good_body, PROTOBUF)[0] == 200
    assert len(collector.wait_rows(2)) == 2


# -- lifecycle ---------------------------------------------------------------------------------


@pytest.fixture
def listening_socket() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    try:
        yield sock
    finally:
        sock.close()


def test_bind_failures_name_the_port(
    receiver: OtlpReceiver, collector: Collector, listening_socket: socket.socket
) -> None:
    taken = listening_socket.getsockname()[1]
    for grpc_port, http_port, bad in [
        (receiver.grpc_port, None, receiver.grpc_port),
        (None, receiver.http_port, receiver.http_port),
        (taken, 0, taken),
        (0, taken, taken),
    ]:
        other = OtlpReceiver(collector, grpc_port=grpc_port, http_port=http_port)
        with pytest.raises(ReceiverBindError, match=f":{bad}\\b") as info:
            other.start()
        assert info.value.port == bad
        other.stop()
    # The first receiver is unaffected.
    export("grpc", receiver, record_spans(resource_explicit()))
    assert len(collector.wait_rows(2)) == 2


def test_stop_is_fast_idempotent_and_frees_ports(collector: Collector) -> None:
    rx = OtlpReceiver(collector, grpc_port=0, http_port=0)
    rx.start()
    # Leave an idle keep-alive HTTP connection and a gRPC channel open across stop().
    http_exporter = make_exporter("http", rx)
    grpc_exporter = make_exporter("grpc", rx)
    spans = record_spans(resource_explicit())
    assert http_exporter.export(spans) is SpanExportResult.SUCCESS
    assert grpc_exporter.export(spans) is SpanExportResult.SUCCESS
    ports = (rx.grpc_port, rx.http_port)

    t0 = time.monotonic()
    rx.stop()
    rx.stop()
    assert time.monotonic() - t0 < 2.0
    http_exporter.shutdown()
    grpc_exporter.shutdown()
    with pytest.raises(RuntimeError):
        rx.start()
    again = OtlpReceiver(collector, grpc_port=ports[0], http_port=ports[1])
    again.start()  # both ports were released
    again.stop()


def test_stats_start_at_zero(receiver: OtlpReceiver) -> None:
    stats = receiver.stats()
    assert set(stats) >= {
        "grpc_requests",
        "grpc_spans_accepted",
        "grpc_rejected",
        "grpc_sink_errors",
        "http_requests",
        "http_spans_accepted",
        "http_rejected",
        "http_sink_errors",
        "sensitive_attributes_dropped",
        "values_masked",
    }
    assert not any(stats.values())
