"""kprobe.sinks.ddl: one table definition, DDL for both chDB (everything) and 18.16 (little).

No server needed: the modern DDL is executed on chDB in-process; the 18.16 DDL is checked as
text here and executed on the real server in tests/sinks/test_stack_clickhouse.py.
"""

from __future__ import annotations

import pytest

from kprobe.schemas.store_tables import Column, TableDef
from kprobe.sinks.ddl import (
    ServerFeatures,
    adapt_type,
    create_table_sql,
    partition_step_ns,
    session_settings,
)

OLD = ServerFeatures.from_version("18.16.1")
PRE_LC = ServerFeatures.from_version("18.14.1")  # before the experimental LowCardinality used here
FULL = ServerFeatures.full()

OFFCPU = TableDef(
    name="offcpu",
    columns=(
        Column("ts", "UInt64", codec="Delta, ZSTD(1)"),
        Column("tid", "UInt32"),
        Column("comm", "LowCardinality(String)"),
        Column("dur_ns", "UInt64", codec="T64, ZSTD(1)"),
        Column("wall", "DateTime64(9, 'UTC')"),
        Column("tags", "Array(LowCardinality(String))"),
        Column("flag", "Bool"),
    ),
    order_by=("tid", "ts"),
    ts_column="ts",
    ttl_seconds=3600,
    skip_indexes=(("tid", "minmax"), ("comm", "set(100)")),
)


def test_versions() -> None:
    assert OLD == ServerFeatures(
        codecs=False, ttl=False, low_cardinality=True, skip_indexes=False, datetime64=False,
        low_cardinality_experimental=True,
    )
    assert not PRE_LC.low_cardinality and not PRE_LC.low_cardinality_experimental
    assert ServerFeatures.from_version("26.9.2.1") == FULL
    assert ServerFeatures.from_version("v24.8.4.13-lts") == FULL
    mid = ServerFeatures.from_version("19.8.3.8")
    assert mid.codecs and mid.ttl and mid.low_cardinality and not mid.skip_indexes and not mid.datetime64
    assert not mid.low_cardinality_experimental
    with pytest.raises(ValueError):
        ServerFeatures.from_version("latest")


@pytest.mark.parametrize(
    ("modern", "old"),
    [
        ("LowCardinality(String)", "String"),
        ("LowCardinality(Nullable(String))", "Nullable(String)"),
        ("Array(LowCardinality(String))", "Array(String)"),
        ("Tuple(a LowCardinality(String), b UInt8)", "Tuple(a String, b UInt8)"),
        ("DateTime64(9, 'UTC')", "Int64"),
        ("Bool", "UInt8"),
        ("FixedString(16)", "FixedString(16)"),
        ("Enum8('a' = 1, 'b,c' = 2)", "Enum8('a' = 1, 'b,c' = 2)"),
        ("UInt64", "UInt64"),
    ],
)
def test_adapt_type_old(modern: str, old: str) -> None:
    assert adapt_type(modern, PRE_LC) == old
    assert adapt_type(modern, FULL) == modern


def test_adapt_type_refuses_what_old_servers_cannot_hold() -> None:
    with pytest.raises(ValueError, match="Map"):
        adapt_type("Map(String, UInt64)", OLD)
    with pytest.raises(ValueError, match="Map"):
        adapt_type("Map(String, UInt64)", PRE_LC)


def test_full_ddl_keeps_every_feature() -> None:
    sql = create_table_sql(OFFCPU, FULL, database="kp")
    assert sql.startswith("CREATE TABLE IF NOT EXISTS `kp`.`offcpu`")
    assert "`ts` UInt64 CODEC(Delta, ZSTD(1))" in sql
    assert "`comm` LowCardinality(String)" in sql
    assert "INDEX `idx_tid` tid TYPE minmax GRANULARITY 4" in sql
    assert "PARTITION BY intDiv(`ts`, 600000000000)" in sql
    assert "ORDER BY (`tid`, `ts`)" in sql
    assert "TTL toDateTime(intDiv(`ts`, 1000000000)) + toIntervalSecond(3600)" in sql


def test_old_ddl_drops_what_18_16_rejects() -> None:
    sql = create_table_sql(OFFCPU, OLD)
    for word in ("CODEC", "TTL", "INDEX", "DateTime64", "Bool", "SETTINGS"):
        assert word not in sql, word
    assert "PARTITION BY intDiv(`ts`, 600000000000)" in sql  # retention still works by partition
    assert "`comm` LowCardinality(String)" in sql  # experimental on 18.16: see session_settings
    assert "`comm` String" in create_table_sql(OFFCPU, PRE_LC)


def test_keys_and_partitions() -> None:
    t = TableDef("t", (Column("ts", "UInt64"),), order_by=(), ts_column="ts", partition_minutes=5)
    assert "ORDER BY tuple()" in create_table_sql(t, OLD)
    assert partition_step_ns(t) == 5 * 60 * 10**9
    expr = TableDef("t", (Column("ts", "UInt64"),), order_by=("intDiv(ts, 1000)",), ts_column="ts")
    assert "ORDER BY intDiv(ts, 1000)" in create_table_sql(expr, FULL)


@pytest.mark.parametrize(
    "bad",
    [
        TableDef("t", (Column("ts", "UInt64"),), order_by=("ts",), ts_column="time"),
        TableDef("t", (Column("ts", "DateTime"),), order_by=("ts",), ts_column="ts"),
        TableDef("t", (Column("ts", "UInt64"), Column("ts", "UInt8")), order_by=("ts",), ts_column="ts"),
        TableDef("t; DROP", (Column("ts", "UInt64"),), order_by=("ts",), ts_column="ts"),
        TableDef("t", (Column("ts", "UInt64"),), order_by=("ts",), ts_column="ts", partition_minutes=0),
    ],
)
def test_bad_definitions_are_caught_before_the_server(bad: TableDef) -> None:
    with pytest.raises(ValueError):
        create_table_sql(bad, FULL)


def test_session_settings_only_name_settings_the_server_has() -> None:
    assert session_settings(OLD) == {"allow_experimental_low_cardinality_type": 1}  # 18.16 rejects unknown ones
    assert session_settings(PRE_LC) == {}
    assert session_settings(FULL) == {"max_partitions_per_insert_block": 0}


def test_full_ddl_runs_on_chdb() -> None:
    """The modern DDL and its session settings execute on chDB (ClickHouse 26.x in-process).

    The rows start now (so the 1-hour TTL keeps them) and span 150 ten-minute partitions, more
    than a modern server takes in one insert block without session_settings().
    """
    from chdb import session

    sess = session.Session()
    try:
        sess.query("CREATE DATABASE IF NOT EXISTS kp")
        sess.query(create_table_sql(OFFCPU, FULL, database="kp"))
        sess.query(create_table_sql(OFFCPU, FULL, database="kp"))  # idempotent
        settings = ", ".join(f"{k} = {v}" for k, v in session_settings(FULL).items())
        sess.query(
            "INSERT INTO kp.offcpu SELECT toUInt64(toUnixTimestamp(now())) * 1000000000 + number * 90000000000, "
            "number % 7, 'comm' || toString(number % 3), number, now64(9), ['a'], number % 2 "
            f"FROM numbers(1000) SETTINGS {settings}"
        )
        got = (
            sess.query("SELECT count(), uniqExact(_partition_id) FROM kp.offcpu", "CSV")
            .bytes()
            .decode()
            .strip()
        )
        assert got in ("1000,150", "1000,151")  # 151 when now() is not on a partition boundary
    finally:
        sess.close()
