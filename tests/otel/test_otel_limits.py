"""What one client can do to the OTLP receiver: real sockets, the real OpenTelemetry SDK."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from kprobe.otel.clock_window import ClockWindow
from kprobe.otel.http_limits import HttpLimits
from kprobe.otel.otlp_decode import SpanBatch
from kprobe.otel.receiver import OtlpReceiver


@pytest.fixture
def rx() -> Iterator[tuple[OtlpReceiver, list[SpanBatch]]]:
    got: list[SpanBatch] = []
    r = OtlpReceiver(got.append, grpc_port=None, http_port=0,
                     http_limits=HttpLimits(max_connections=4, request_deadline_s=1.0, idle_timeout_s=5.0))
    r.start()
    try:
        yield r, got
    finally:
        r.stop()


def test_slowloris_request_is_cut_at_the_deadline_and_counted(rx) -> None:
    r, _ = rx
    s = socket.create_connection(("127.0.0.1", r.http_port))
    s.settimeout(0.05)
    t0 = time.monotonic()
    s.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n")
    cut = None
    try:
        for i in range(100):  # one header byte every 0.1 s: each recv is quick, the request never ends
            try:
                s.sendall(b"X-Slow-%d: 1\r\n" % i)
            except OSError:
                cut = time.monotonic() - t0
                break
            try:
                if s.recv(1) == b"":
                    cut = time.monotonic() - t0
                    break
            except TimeoutError:
                pass
            except OSError:
                cut = time.monotonic() - t0
                break
            time.sleep(0.1)
    finally:
        s.close()
    assert cut is not None and cut < 3.0, cut  # the deadline is 1 s; without it the connection lives on
    assert r.stats()["http_deadline_exceeded"] == 1


def test_connections_over_the_cap_get_503_and_are_counted(rx) -> None:
    r, got = rx
    held = [socket.create_connection(("127.0.0.1", r.http_port)) for _ in range(4)]
    try:
        time.sleep(0.3)  # the server has taken all four
        extra = socket.create_connection(("127.0.0.1", r.http_port))
        extra.settimeout(5)
        reply = extra.recv(4096)
        extra.close()
        assert reply.startswith(b"HTTP/1.1 503") and b"Retry-After" in reply
        assert r.stats()["http_connections_refused"] == 1
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the held ones were released: a real exporter gets through again
        provider = TracerProvider(resource=Resource.create({"service.name": "after-cap"}))
        provider.add_span_processor(SimpleSpanProcessor(HttpExporter(endpoint=r.http_endpoint, timeout=5)))
        provider.get_tracer("t").start_span("ok").end()
        provider.shutdown()
        if got:
            break
        time.sleep(0.2)
    assert got and got[0].name == ["ok"]


def test_span_times_far_from_now_are_clamped_and_counted() -> None:
    got: list[SpanBatch] = []
    window = ClockWindow(past_s=3600, future_s=60)
    with OtlpReceiver(got.append, grpc_port=None, http_port=0, clock_window=window) as r:
        provider = TracerProvider(resource=Resource.create({"service.name": "skewed"}))
        provider.add_span_processor(SimpleSpanProcessor(HttpExporter(endpoint=r.http_endpoint, timeout=5)))
        tracer = provider.get_tracer("t")
        now = time.time_ns()
        tracer.start_span("ancient", start_time=1).end(end_time=2)
        tracer.start_span("future", start_time=now + 11 * 3600 * 10**9).end(end_time=now + 12 * 3600 * 10**9)
        tracer.start_span("fine", start_time=now - 10**9).end(end_time=now)
        provider.shutdown()
        stats = r.stats()
    rows = {n: (s, e, d) for b in got for n, s, e, d in zip(b.name, b.ts_ns, b.end_ns, b.duration_ns, strict=True)}
    after = time.time_ns()
    for name in ("ancient", "future"):
        s, e, d = rows[name]
        assert now - 3600 * 10**9 <= s <= after + 60 * 10**9 and now - 3600 * 10**9 <= e <= after + 60 * 10**9, name
        assert d == e - s
    assert rows["fine"] == (now - 10**9, now, 10**9)
    assert stats["spans_time_clamped"] == 2


def test_metrics_endpoint_is_local_capped_and_deadline_bound() -> None:
    import urllib.request

    from kprobe.api.prometheus import Metric, MetricsServer, parse

    srv = MetricsServer(0, lambda: [Metric("kp_up", "up", "gauge", (({}, 1.0),))],
                        limits=HttpLimits(max_connections=2, request_deadline_s=1.0, idle_timeout_s=5.0)).start()
    try:
        assert srv._server.server_address[0] == "127.0.0.1"
        held = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(2)]
        for s in held:
            s.sendall(b"GET /metrics HTTP/1.1\r\n")  # and never finish
        time.sleep(0.3)
        extra = socket.create_connection(("127.0.0.1", srv.port))
        extra.settimeout(5)
        assert extra.recv(4096).startswith(b"HTTP/1.1 503")
        extra.close()
        time.sleep(1.5)  # the deadline cuts both slow requests
        for s in held:
            s.settimeout(2)
            try:
                assert s.recv(4096) == b""
            except ConnectionResetError:
                pass
            s.close()
        text = urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/metrics", timeout=5).read().decode()
        got = parse(text)
        assert got["kp_up"] == 1.0
        assert got["kprobe_metrics_http_connections_refused_total"] == 1
        assert got["kprobe_metrics_http_deadline_exceeded_total"] == 2
    finally:
        srv.stop()
