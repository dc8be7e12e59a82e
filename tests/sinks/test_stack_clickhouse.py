"""Generated DDL on the real old ClickHouse (Debian's 18.16) over the native protocol.

chDB checks the modern side (tests/sinks/test_ddl.py); this checks that the same table definitions,
adapted by kprobe.sinks.ddl, create, take numpy-columnar and list inserts, and drop time
partitions (how retention works where TTL does not exist) on the server version CI really has.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pytest
from clickhouse_driver import Client

from kprobe.schemas.store_tables import Column, TableDef
from kprobe.sinks.ddl import (
    ServerFeatures,
    create_table_sql,
    partition_step_ns,
    session_settings,
)

pytestmark = pytest.mark.servers

NS_PER_MINUTE = 60 * 1_000_000_000
T0 = 1_764_000_000 * 1_000_000_000  # an arbitrary UTC instant in ns, aligned nowhere in particular

OFFCPU = TableDef(
    name="offcpu",
    columns=(
        Column("ts", "UInt64", codec="Delta, ZSTD(1)"),
        Column("tgid", "UInt32"),
        Column("tid", "UInt32"),
        Column("comm", "LowCardinality(String)"),
        Column("reason", "LowCardinality(String)"),
        Column("dur_ns", "UInt64", codec="T64, ZSTD(1)"),
        Column("cpu", "UInt16"),
    ),
    order_by=("tgid", "tid", "ts"),
    ts_column="ts",
    ttl_seconds=86_400,
    skip_indexes=(("tid", "minmax"), ("comm", "set(256)")),
)
SOCK_IO = TableDef(
    name="sock_io",
    columns=(
        Column("ts", "UInt64", codec="DoubleDelta"),
        Column("tid", "UInt32"),
        Column("saddr", "String"),
        Column("dport", "UInt16"),
        Column("bytes", "Int64"),
        Column("dir", "LowCardinality(String)"),
        Column("wall", "DateTime64(9, 'UTC')"),
        Column("retrans", "Bool"),
    ),
    order_by=("ts",),
    ts_column="ts",
    partition_minutes=5,
)
LABELS = TableDef(
    name="labels",
    columns=(
        Column("ts", "UInt64"),
        Column("tags", "Array(LowCardinality(String))"),
        Column("note", "Nullable(String)"),
    ),
    order_by=(),
    ts_column="ts",
)


@pytest.fixture(scope="module")
def client(stack: dict[str, str]) -> Iterator[tuple[Client, ServerFeatures, str]]:
    """A native-protocol client in a throwaway database, with the sink's session settings."""
    host, port = stack["CLICKHOUSE_HOST"], int(stack["CLICKHOUSE_PORT"])
    version = Client(host, port=port).execute("SELECT version()")[0][0]
    features = ServerFeatures.from_version(version)
    db = f"kprobe_test_{uuid.uuid4().hex[:10]}"
    cl = Client(host, port=port, settings={**session_settings(features), "use_numpy": True})
    cl.execute(f"CREATE DATABASE {db}")
    try:
        yield cl, features, db
    finally:
        cl.execute(f"DROP DATABASE IF EXISTS {db}")
        cl.disconnect()


def _rows(table: TableDef, n: int) -> dict[str, np.ndarray]:
    """n rows spread over two partitions of the table, one numpy array per column."""
    rng = np.random.default_rng(7)
    step = partition_step_ns(table)
    ts = T0 - T0 % step + np.sort(rng.integers(0, 2 * step, n, dtype=np.uint64))
    words = np.array(["nginx", "order-gw", "kworker/0:1", "", "ünïcode"], dtype=object)
    cols: dict[str, np.ndarray] = {}
    for col in table.columns:
        if col.name == table.ts_column:
            cols[col.name] = ts
        elif col.type in ("UInt32", "UInt16", "UInt64", "Int64"):
            cols[col.name] = rng.integers(0, 60_000, n).astype(np.dtype(col.type.lower()))
        elif "String" in col.type:
            cols[col.name] = words[rng.integers(0, len(words), n)]
        elif col.type.startswith("DateTime64"):
            cols[col.name] = ts.astype(np.int64)  # Int64 ticks on old servers
        elif col.type == "Bool":
            cols[col.name] = (rng.integers(0, 2, n)).astype(np.uint8)
        else:
            raise AssertionError(f"no generator for {col.type}")
    return cols


def _insert(cl: Client, db: str, table: TableDef, cols: dict[str, np.ndarray], *, numpy: bool) -> None:
    names = ", ".join(f"`{c}`" for c in cols)
    data = list(cols.values()) if numpy else [v.tolist() for v in cols.values()]
    settings = None if numpy else {"use_numpy": False}
    cl.execute(f"INSERT INTO `{db}`.`{table.name}` ({names}) VALUES", data, columnar=True, settings=settings)


def test_server_is_the_old_one(client: tuple[Client, ServerFeatures, str]) -> None:
    """The point of this file is the 18.16 path; a newer server would make it vacuous."""
    _, features, _ = client
    assert features == ServerFeatures.from_version("18.16.1")
    assert not (features.codecs or features.ttl or features.skip_indexes)
    assert features.low_cardinality and features.low_cardinality_experimental  # behind its setting


@pytest.mark.parametrize("table", [OFFCPU, SOCK_IO], ids=lambda t: t.name)
@pytest.mark.parametrize("numpy", [True, False], ids=["numpy", "lists"])
def test_create_insert_count(
    client: tuple[Client, ServerFeatures, str], table: TableDef, numpy: bool
) -> None:
    cl, features, db = client
    cl.execute(create_table_sql(table, features, db))
    cl.execute(create_table_sql(table, features, db))  # IF NOT EXISTS: re-running is harmless
    before = cl.execute(f"SELECT count() FROM `{db}`.`{table.name}`")[0][0]
    cols = _rows(table, 50_000)
    _insert(cl, db, table, cols, numpy=numpy)
    assert cl.execute(f"SELECT count() FROM `{db}`.`{table.name}`")[0][0] == before + 50_000
    got = cl.execute(f"SELECT min(ts), max(ts) FROM `{db}`.`{table.name}`", settings={"use_numpy": False})
    assert got[0][0] <= int(cols["ts"].min()) and got[0][1] >= int(cols["ts"].max())


def test_nested_types_with_lists(client: tuple[Client, ServerFeatures, str]) -> None:
    cl, features, db = client
    cl.execute(create_table_sql(LABELS, features, db))
    rows = [[T0, T0 + 1], [["a", "b"], []], ["x", None]]
    cl.execute(
        f"INSERT INTO `{db}`.`labels` (ts, tags, note) VALUES",
        rows,
        columnar=True,
        settings={"use_numpy": False},
    )
    got = cl.execute(f"SELECT ts, tags, note FROM `{db}`.`labels` ORDER BY ts", settings={"use_numpy": False})
    assert got == [(T0, ["a", "b"], "x"), (T0 + 1, [], None)]


def test_retention_drops_whole_partitions(client: tuple[Client, ServerFeatures, str]) -> None:
    """No TTL on 18.16: the caller expires data by dropping the oldest time partition."""
    cl, features, db = client
    table = TableDef(SOCK_IO.name + "_ret", SOCK_IO.columns, SOCK_IO.order_by, "ts", partition_minutes=10)
    cl.execute(create_table_sql(table, features, db))
    cols = _rows(table, 10_000)
    _insert(cl, db, table, cols, numpy=True)
    step = partition_step_ns(table)
    parts = cl.execute(
        f"SELECT DISTINCT partition FROM system.parts WHERE database = '{db}' AND table = '{table.name}' AND active",
        settings={"use_numpy": False},
    )
    oldest = int(cols["ts"].min()) // step
    assert sorted(int(p[0]) for p in parts) == [oldest, oldest + 1]
    cl.execute(f"ALTER TABLE `{db}`.`{table.name}` DROP PARTITION {oldest}")
    left = cl.execute(f"SELECT count(), min(ts) FROM `{db}`.`{table.name}`", settings={"use_numpy": False})[0]
    assert left[0] == int((cols["ts"] // step > oldest).sum())
    assert left[1] // step == oldest + 1


def _event_tables() -> list[tuple[TableDef, dict[str, np.dtype]]]:
    """Every table the agent really writes (kprobe.schemas.tables), as a TableDef plus dtypes."""
    from kprobe.schemas.tables import ENRICH_COLUMNS, EVENT_TYPES, table_columns

    out = []
    for et in EVENT_TYPES:
        empty = et.empty()
        dtypes = {name: arr.dtype for name, arr in empty.items()}
        dtypes.update({name: np.dtype(object) for name, _ in ENRICH_COLUMNS})
        columns = tuple(Column(name, type_) for name, type_ in table_columns(et))
        out.append((TableDef(f"agent_{et.name}", columns, order_by=et.order_by, ts_column="ts"), dtypes))
    return out


def test_every_event_table_of_the_agent(client: tuple[Client, ServerFeatures, str]) -> None:
    """The agent's real schemas, adapted, create and take a numpy-columnar batch on 18.16."""
    cl, features, db = client
    rng = np.random.default_rng(11)
    n = 5_000
    for table, dtypes in _event_tables():
        cl.execute(create_table_sql(table, features, db))
        cols: dict[str, np.ndarray] = {}
        for name, dtype in dtypes.items():
            if name == table.ts_column:
                cols[name] = np.uint64(T0) + np.arange(n, dtype=np.uint64) * np.uint64(1_000_000)
            elif dtype.kind == "O":
                cols[name] = np.array(["a", "bb", ""], dtype=object)[rng.integers(0, 3, n)]
            else:
                cols[name] = rng.integers(0, 100, n).astype(dtype)
        _insert(cl, db, table, cols, numpy=True)
        assert cl.execute(f"SELECT count() FROM `{db}`.`{table.name}`")[0][0] == n, table.name
