"""Analysis rows on the real ClickHouse 18.16 server (scale-out mode): DDL fits, inserts are idempotent."""

from __future__ import annotations

import uuid

import pytest

from kprobe.dataflows.causal_step import analysis_row  # noqa: E402
from kprobe.dataflows.windowing import Operation  # noqa: E402
from kprobe.schemas.store_tables import ANALYSIS_TABLE  # noqa: E402
from kprobe.sinks.analysis_rows import AnalysisRowsSink, ClickHouseSql  # noqa: E402
from tests.causal.sample_analyses import three_hop  # noqa: E402

pytestmark = pytest.mark.servers


def test_rows_written_once_and_read_back(stack):
    db = f"kp_graph_{uuid.uuid4().hex[:8]}"
    ch = ClickHouseSql(stack["CLICKHOUSE_HOST"], int(stack["CLICKHOUSE_PORT"]), db)
    try:
        sink = AnalysisRowsSink(ch, ch.features)
        a = three_hop()
        op = Operation("op:test:10:10:1-2", "syscall", "recvfrom fd=4", "test", 10, 10, a.interval.start_ns,
                       a.interval.end_ns)
        row = analysis_row(op, a)
        assert sink.write([row]) == 1
        assert sink.write([row, row]) == 0 and sink.skipped == 2
        got = sink.latest(op.op_id)
        assert (got["root_kind"], int(got["root_pid"]), got["digest"]) == ("memory_pressure", 30, row["digest"])
        assert ch.query_rows(f"SELECT count() AS c FROM {ANALYSIS_TABLE}")[0]["c"] == 1
    finally:
        ch.client.execute(f"DROP DATABASE IF EXISTS {db}")
