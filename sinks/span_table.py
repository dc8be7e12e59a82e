"""The ``spans`` table: OpenTelemetry spans next to the kernel events they are joined with.

Kept apart from the OTLP decoder (which imports protobuf) so the store can create the table
without loading the receiver. Columns mirror :data:`kprobe.otel.spans.SPAN_SCHEMA`; a test checks
they stay in step. The join with kernel events is host + ``pid`` (resource ``process.pid``) +
``tid`` (span attribute ``thread.id``, 0 when absent) + [``ts_ns``, ``end_ns``], so the sort key
starts with pid; lookups by span or trace id go through bloom-filter skip indexes where the
server has them (ClickHouse 18.16 gets the same table without them, see sinks/ddl.py).
"""

from __future__ import annotations

from kprobe.sinks.ddl import Column, TableDef

SPAN_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ts_ns", "UInt64"),
    ("end_ns", "UInt64"),
    ("duration_ns", "UInt64"),
    ("trace_id", "String"),
    ("span_id", "String"),
    ("parent_span_id", "String"),
    ("name", "String"),
    ("kind", "UInt8"),
    ("service", "LowCardinality(String)"),
    ("host", "LowCardinality(String)"),
    ("pid", "UInt32"),
    ("tid", "UInt32"),
    ("status_code", "UInt8"),
    ("status_message", "String"),
    ("attributes", "String"),
    ("events", "String"),
)

SPANS_TABLE = TableDef(
    "spans",
    tuple(Column(n, t) for n, t in SPAN_COLUMNS),
    order_by=("pid", "ts_ns"),
    ts_column="ts_ns",
    partition_minutes=10,
    skip_indexes=(("span_id", "bloom_filter(0.01)"), ("trace_id", "bloom_filter(0.01)")),
)

#: OTLP status codes as stored in ``status_code``.
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2
