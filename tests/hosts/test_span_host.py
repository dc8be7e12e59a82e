"""With --host-name, spans the agent stores that name this machine (or no host) carry the configured name, so they
join that agent's kernel rows; a span naming another machine keeps its name. Real OTLP protobufs, real decoder,
real chDB store."""

from __future__ import annotations

import socket
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span


def _request(host: str | None, span_id: int) -> bytes:
    attrs = [KeyValue(key="service.name", value=AnyValue(string_value="pay")),
             KeyValue(key="process.pid", value=AnyValue(int_value=4242))]
    if host is not None:
        attrs.append(KeyValue(key="host.name", value=AnyValue(string_value=host)))
    span = Span(trace_id=bytes(range(16)), span_id=span_id.to_bytes(8, "big"), name="charge",
                start_time_unix_nano=1_700_000_000_000_000_000, end_time_unix_nano=1_700_000_000_100_000_000)
    rs = ResourceSpans(resource={"attributes": attrs}, scope_spans=[ScopeSpans(spans=[span])])
    return ExportTraceServiceRequest(resource_spans=[rs]).SerializeToString()


def test_configured_host_name_names_this_machines_spans(tmp_path: Path) -> None:
    from kprobe.otel.otlp_decode import decode_export_request
    from kprobe.otel.span_writer import SpanWriter
    from kprobe.sinks.chdb_store import ChdbStore

    store = ChdbStore(tmp_path)
    try:
        named, plain = SpanWriter(store, host="node-a"), SpanWriter(store)
        for i, host in enumerate((socket.gethostname(), None, "other-box"), start=1):
            named(decode_export_request(_request(host, i)))
        plain(decode_export_request(_request(socket.gethostname(), 9)))
        got = {int(r["span_id"], 16): r["host"] for r in store.query_rows("SELECT span_id, host FROM spans")}
        assert got == {1: "node-a", 2: "node-a", 3: "other-box", 9: socket.gethostname()}
    finally:
        store.close()
