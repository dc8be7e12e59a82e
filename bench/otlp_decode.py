"""Benchmark: OTLP ExportTraceServiceRequest protobuf -> redacted SpanBatch (-> Arrow).

Why: the receiver decodes on the request thread, so decode throughput bounds
how many spans/s one agent host can ingest. Target: >= 50k spans/s on a
2-core VM. The synthetic request looks like an instrumented payment service:
~10 attributes per span (http/db/rpc semantic conventions, a thread.id, an
order id), 1 in 20 spans with an exception event, 1 in 50 with a card number
to mask and a cvv to drop.

Usage: python3 bench/otlp_decode.py [--spans-per-request 512] [--requests 40]
"""

from __future__ import annotations

import argparse
import os
import time

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from kprobe.otel.otlp_decode import decode_export_request


def _kv(key: str, value: object) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def build_request(n_spans: int, seed: int = 0) -> bytes:
    """One request of ``n_spans`` spans from one service; deterministic for a seed."""
    base = 1_700_000_000_000_000_000 + seed * 1_000_000_000
    spans = []
    for i in range(n_spans):
        attrs = [
            _kv("http.request.method", "POST"),
            _kv("http.route", "/v1/payments/{id}/capture"),
            _kv("http.response.status_code", 200 if i % 20 else 500),
            _kv("server.address", "payments.internal"),
            _kv("db.system", "postgresql"),
            _kv("db.query.text", "UPDATE ledger SET amount = amount - $1 WHERE account_id = $2"),
            _kv("thread.id", 4000 + i % 8),
            _kv("thread.name", f"worker-{i % 8}"),
            _kv("order.id", f"ord-{seed:04d}-{i:08d}"),
            _kv("payment.amount", 125.5 + i),
        ]
        if i % 50 == 0:
            attrs.append(_kv("card.number", "4111 1111 1111 1111"))
            attrs.append(_kv("card.cvv", "123"))
        events = []
        status = Status()
        if i % 20 == 0:
            status = Status(code=Status.STATUS_CODE_ERROR, message="upstream timeout after 250ms")
            events.append(
                Span.Event(
                    name="exception",
                    time_unix_nano=base + i * 1000 + 500,
                    attributes=[
                        _kv("exception.type", "TimeoutError"),
                        _kv("exception.message", "acquirer did not answer"),
                    ],
                )
            )
        spans.append(
            Span(
                trace_id=os.urandom(16),
                span_id=os.urandom(8),
                parent_span_id=os.urandom(8) if i % 4 else b"",
                name="POST /v1/payments/{id}/capture",
                kind=Span.SPAN_KIND_SERVER,
                start_time_unix_nano=base + i * 1000,
                end_time_unix_nano=base + i * 1000 + 750,
                attributes=attrs,
                events=events,
                status=status,
            )
        )
    resource = [
        _kv("service.name", "payments-api"),
        _kv("host.name", "pay-01"),
        _kv("process.pid", 4242),
        _kv("telemetry.sdk.language", "python"),
        _kv("deployment.environment", "prod"),
    ]
    req = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource={"attributes": resource},
                scope_spans=[ScopeSpans(scope={"name": "payments"}, spans=spans)],
            )
        ]
    )
    return req.SerializeToString()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spans-per-request", type=int, default=512)
    ap.add_argument("--requests", type=int, default=40)
    args = ap.parse_args()

    bodies = [build_request(args.spans_per_request, seed) for seed in range(args.requests)]
    total = args.spans_per_request * args.requests
    mb = sum(map(len, bodies)) / 1e6
    for body in bodies[:3]:  # warm caches: sensitive-key memo, pyarrow's lazy type/converter init
        decode_export_request(body).to_arrow()

    t0 = time.perf_counter()
    batches = [decode_export_request(b) for b in bodies]
    t_decode = time.perf_counter() - t0
    t0 = time.perf_counter()
    for b in batches:
        b.to_arrow()
    t_arrow = time.perf_counter() - t0

    assert sum(map(len, batches)) == total
    masked = sum(b.values_masked for b in batches)
    dropped = sum(b.sensitive_dropped for b in batches)
    print(f"requests={args.requests} spans/request={args.spans_per_request} body={mb:.1f} MB")
    print(f"decode:          {total / t_decode:,.0f} spans/s  ({mb / t_decode:.1f} MB/s)")
    print(f"to_arrow:        {total / t_arrow:,.0f} spans/s")
    print(f"decode+to_arrow: {total / (t_decode + t_arrow):,.0f} spans/s")
    print(f"masked values={masked} dropped sensitive attributes={dropped}")


if __name__ == "__main__":
    main()
