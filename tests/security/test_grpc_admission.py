"""OTLP/gRPC: every call refused for capacity is counted, and the count equals what clients saw.

The real receiver on an ephemeral port, real grpcio clients sending a real OTel SDK encoded
ExportTraceServiceRequest, a sink held shut so admitted calls stay in progress while the flood
arrives; then the sink opens and the admitted calls complete.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from kprobe.otel.grpc_server import METHOD, SERVICE
from kprobe.otel.otlp_decode import SpanBatch
from kprobe.otel.receiver import OtlpReceiver

LIMIT = 3


class GatedSink:
    """``on_spans`` that waits for the gate: keeps admitted calls in progress on purpose."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.spans = 0
        self.entered = threading.Event()

    def __call__(self, batch: SpanBatch) -> None:
        self.entered.set()
        assert self.gate.wait(60), "gate never opened"
        self.spans += len(batch)


def sdk_body() -> bytes:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "payment-handler"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("t").start_as_current_span("POST /pay"):
        pass
    provider.shutdown()
    return encode_spans(memory.get_finished_spans()).SerializeToString()


@pytest.fixture
def gated() -> Iterator[tuple[OtlpReceiver, GatedSink]]:
    sink = GatedSink()
    rx = OtlpReceiver(sink, grpc_port=0, http_port=None, grpc_workers=1, grpc_max_concurrent=LIMIT)
    rx.start()
    try:
        yield rx, sink
    finally:
        sink.gate.set()
        rx.stop()


def test_refusals_counted_equal_refusals_seen(gated: tuple[OtlpReceiver, GatedSink]) -> None:
    rx, sink = gated
    body, flood = sdk_body(), 20
    with grpc.insecure_channel(rx.grpc_endpoint) as channel:
        call = channel.unary_unary(f"/{SERVICE}/{METHOD}")
        first = call.future(body, timeout=30)
        assert sink.entered.wait(10)  # one admitted call is inside the sink, holding it
        futures = [first] + [call.future(body, timeout=30) for _ in range(flood - 1)]
        t0 = time.monotonic()
        while sum(f.done() for f in futures) < flood - LIMIT and time.monotonic() - t0 < 10:
            time.sleep(0.01)  # the admitted calls wait for the gate; the others must be answered now
        refused_after = time.monotonic() - t0
        done_while_shut = sum(f.done() for f in futures)
        sink.gate.set()
        ok, refused = 0, []
        for f in futures:
            try:
                f.result(timeout=30)
                ok += 1
            except grpc.RpcError as e:
                refused.append(e)
    assert done_while_shut == flood - LIMIT
    codes = [e.code() for e in refused]
    assert all(c is grpc.StatusCode.RESOURCE_EXHAUSTED for c in codes), codes
    assert "busy" in refused[0].details()
    stats = rx.stats()
    assert stats["grpc_calls_refused"] == len(refused) == flood - LIMIT, (stats, codes)
    assert ok == LIMIT and sink.spans == LIMIT  # one span per call, all admitted calls delivered
    assert stats["grpc_requests"] == LIMIT  # refused bodies are never read or decoded
    assert refused_after < 5, "refusals waited behind admitted calls"


def test_slots_come_back_after_the_flood(gated: tuple[OtlpReceiver, GatedSink]) -> None:
    rx, sink = gated
    sink.gate.set()
    body = sdk_body()
    with grpc.insecure_channel(rx.grpc_endpoint) as channel:
        call = channel.unary_unary(f"/{SERVICE}/{METHOD}")
        for _ in range(3 * LIMIT):  # one after another: never over the cap
            call(body, timeout=10)
        with pytest.raises(grpc.RpcError) as bad:
            call(b"\xff\xff\xff", timeout=10)  # malformed: INVALID_ARGUMENT, and its slot is released too
        assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        for _ in range(LIMIT):
            call(body, timeout=10)
    assert rx.stats()["grpc_calls_refused"] == 0 and sink.spans == 4 * LIMIT


def test_a_stalled_call_is_cut_and_its_slot_comes_back() -> None:
    """A real grpc client that opens an Export and never sends its request holds a slot only until
    the connection age limit closes it; the cut and the refusal meanwhile are both counted."""
    sink = GatedSink()
    sink.gate.set()
    rx = OtlpReceiver(sink, grpc_port=0, http_port=None, grpc_workers=1, grpc_max_concurrent=1,
                      grpc_call_deadline_s=1.5)
    rx.start()
    never = threading.Event()

    def stalled() -> Iterator[bytes]:
        never.wait(30)  # headers sent, no message, no half-close
        yield b""

    try:
        with grpc.insecure_channel(rx.grpc_endpoint) as slow, grpc.insecure_channel(rx.grpc_endpoint) as fast:
            t0 = time.monotonic()
            stall = slow.stream_unary(f"/{SERVICE}/{METHOD}").future(stalled(), timeout=30)
            call = fast.unary_unary(f"/{SERVICE}/{METHOD}")
            deadline = time.monotonic() + 5
            while rx._grpc.admission.in_progress == 0 and time.monotonic() < deadline:  # type: ignore[union-attr]
                time.sleep(0.01)
            with pytest.raises(grpc.RpcError) as busy:
                call(sdk_body(), timeout=10)
            assert busy.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            with pytest.raises(grpc.RpcError):
                stall.result(timeout=20)
            cut_after = time.monotonic() - t0
            deadline = time.monotonic() + 10
            while True:  # the fast channel's connection is aged out too: retry until a new one answers
                try:
                    call(sdk_body(), timeout=10)
                    break
                except grpc.RpcError as e:
                    assert e.code() is grpc.StatusCode.UNAVAILABLE and time.monotonic() < deadline, e
        stats = rx.stats()
        assert stats["grpc_calls_cut"] == 1 and stats["grpc_calls_refused"] == 1, stats
        assert cut_after < 10, cut_after
        assert sink.spans == 1
    finally:
        never.set()
        rx.stop()
