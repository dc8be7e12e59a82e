"""The spans table definition stays in step with the decoder and fits old and new servers."""

from __future__ import annotations

import numpy as np

from kprobe.otel.otlp_decode import SPAN_SCHEMA, SpanBatch
from kprobe.otel.span_writer import batch_columns, otel_summary
from kprobe.schemas.store_tables import SPAN_COLUMNS, SPANS_TABLE
from kprobe.sinks.ddl import ServerFeatures, create_table_sql


def test_span_columns_match_the_decoder() -> None:
    assert [n for n, _ in SPAN_COLUMNS] == SPAN_SCHEMA.names


def test_ddl_full_and_18_16() -> None:
    full = create_table_sql(SPANS_TABLE, ServerFeatures.full())
    assert "bloom_filter" in full and "LowCardinality(String)" in full
    old = create_table_sql(SPANS_TABLE, ServerFeatures.from_version("18.16.1"))
    assert "INDEX" not in old and "LowCardinality(String)" in old and "ORDER BY (`pid`, `ts_ns`)" in old
    older = create_table_sql(SPANS_TABLE, ServerFeatures.from_version("18.14.1"))
    assert "LowCardinality" not in older


def test_batch_columns_types_follow_the_schema() -> None:
    b = SpanBatch.from_rows([(1, 2, 1, "a" * 32, "b" * 16, "", "n", 2, "svc", "h", 7, 8, 2, "m", "{}", "[]")])
    cols = batch_columns(b)
    assert list(cols) == SPAN_SCHEMA.names
    assert cols["ts_ns"].dtype == np.uint64 and cols["pid"].dtype == np.uint32 and cols["kind"].dtype == np.uint8
    assert cols["name"].dtype == object and cols["name"][0] == "n"


def test_summary_adds_transports() -> None:
    rx = {"grpc_spans_accepted": 3, "http_spans_accepted": 2, "grpc_invalid_spans": 1, "http_invalid_spans": 0,
          "grpc_requests": 4, "http_requests": 2, "grpc_rejected": 1, "http_rejected": 1, "grpc_sink_errors": 0,
          "http_sink_errors": 1, "values_masked": 5, "sensitive_attributes_dropped": 2}
    s = otel_summary(rx, {"spans_stored": 5, "span_write_errors": 0, "spans_failed": 0, "last_error": ""})
    assert (s["spans_received"], s["spans_rejected_invalid_ids"], s["requests"]) == (6, 1, 6)
    assert (s["requests_rejected_malformed"], s["requests_sink_errors"], s["spans_stored"]) == (2, 1, 5)
