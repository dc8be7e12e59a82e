"""The ingest's insert path on the real ClickHouse 18.16: Native blocks built from Arrow with numpy
(sinks/native.py) over HTTP, and the batch ledger's exactly-once repair (sinks/clickhouse_server.py).

Ground truth: the values we built, read back through the native protocol (another code path)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pytest
from clickhouse_driver import Client

from kprobe.schemas.store_tables import LEDGER
from kprobe.sinks import native
from kprobe.sinks.clickhouse_server import PENDING, InsertRefused, ServerSink
from kprobe.topics import wire

pytestmark = pytest.mark.servers


@pytest.fixture
def sink(stack: dict[str, str]) -> Iterator[ServerSink]:
    db = f"kp_native_{uuid.uuid4().hex[:8]}"
    s = ServerSink(stack["CLICKHOUSE_HOST"], int(stack["CLICKHOUSE_PORT"]), database=db,
                   http_port=int(stack["CLICKHOUSE_HTTP_PORT"])).connect()
    try:
        yield s
    finally:
        s.client.execute(f"DROP DATABASE IF EXISTS `{db}`")
        s.close()


def test_native_block_stores_every_value_exactly(sink: ServerSink) -> None:
    c = sink.client
    c.execute("CREATE TABLE t (i UInt32, a String, b String, c String, x Int32, y UInt8, z UInt64) "
              "ENGINE = MergeTree ORDER BY i")
    n = 700
    rng = np.random.default_rng(7)
    words = ["", "read", "é€😀", "x" * 127, "y" * 128, "z" * 20000, "w" * 300]  # 1-, 2- and 3-byte varints
    a = [words[k] for k in rng.integers(0, len(words), n)]
    a[5] = None  # a null string is stored as ''
    c_plain = [str(k) * (k % 40) for k in range(n)]
    cols = [("i", "UInt32", np.arange(n, dtype=np.uint32)),
            ("a", "String", pa.array(a, type=pa.string()).dictionary_encode()),
            ("b", "String", pa.array(["node"] * n).dictionary_encode()),
            ("c", "String", pa.array(c_plain)),
            ("x", "Int32", pa.array(np.arange(n, dtype=np.int64) - 350)),  # cast to the column's width
            ("y", "UInt8", np.full(n, 7, np.uint8)),
            ("z", "UInt64", pa.array(np.arange(n, dtype=np.uint64) << np.uint64(40)))]
    sliced = pa.array(a, type=pa.string()).slice(100, 50)  # an Arrow array with an offset
    cols2 = [("i", "UInt32", np.arange(50, dtype=np.uint32) + n), ("a", "String", sliced),
             ("b", "String", pa.array(["h"] * 50)), ("c", "String", pa.array(c_plain[:50]).dictionary_encode()),
             ("x", "Int32", np.zeros(50, np.int32)), ("y", "UInt8", np.zeros(50, np.uint8)),
             ("z", "UInt64", np.zeros(50, np.uint64))]
    sink.http_post("INSERT INTO t FORMAT Native", native.block(cols, n) + native.block(cols2, 50))
    reader = Client(sink.host, port=sink.port, database=sink.database)  # plain rows, str values
    rows = reader.execute("SELECT i, a, b, c, x, y, z FROM t ORDER BY i")
    assert len(rows) == n + 50
    for i, row in enumerate(rows):
        if i < n:
            want = (i, a[i] or "", "node", c_plain[i], i - 350, 7, i << 40)
        else:
            j = i - n
            want = (i, a[100 + j] or "", "h", c_plain[j], 0, 0, 0)
        assert row == want, i


def test_low_cardinality_blocks_store_every_value_exactly(sink: ServerSink) -> None:
    """LowCardinality(String) columns are sent as ClickHouse's own dictionary serialisation (18.16
    cannot convert a String block into one): 1-, 2- and 4-byte indexes, nulls, plain arrays."""
    c = sink.client
    c.execute("CREATE TABLE lc (i UInt32, a LowCardinality(String), b LowCardinality(String)) "
              "ENGINE = MergeTree ORDER BY i")
    rng = np.random.default_rng(11)
    blocks, want = [], []
    for n, distinct in ((500, 7), (3000, 300), (80_000, 70_000)):  # UInt8, UInt16 and UInt32 indexes
        pool = ["", "read", "é€😀", "x" * 200] + [f"v{k}" for k in range(distinct - 4)]
        a = [pool[k] for k in rng.integers(0, distinct, n)]
        a[1] = None  # a null string is stored as ''
        b = [pool[k % distinct] for k in range(n)]
        start = len(want)
        blocks += native.block([("i", "UInt32", np.arange(start, start + n, dtype=np.uint32)),
                                ("a", native.LOW_CARDINALITY_STRING, pa.array(a, type=pa.string()).dictionary_encode()),
                                ("b", native.LOW_CARDINALITY_STRING, pa.array(b, type=pa.string()))], n)
        want += [(start + k, a[k] or "", b[k]) for k in range(n)]
    sink.http_post("INSERT INTO lc FORMAT Native", blocks)
    reader = Client(sink.host, port=sink.port, database=sink.database)
    assert reader.execute("SELECT i, a, b FROM lc ORDER BY i") == want
    assert reader.execute("SELECT countIf(a = 'read'), uniqExact(b) FROM lc") == [
        (sum(1 for _, a, _ in want if a == "read"), len({b for _, _, b in want}))]


def test_a_refused_insert_raises_insert_refused(sink: ServerSink) -> None:
    with pytest.raises(InsertRefused, match="HTTP"):
        sink.http_post("INSERT INTO no_such_table FORMAT Native", native.block([("i", "UInt8", np.zeros(1, np.uint8))], 1))
    with pytest.raises(native.NativeError):
        native.block([("i", "UInt8", pa.array(["text"]))], 1)


def _batch(seq: int, n: int) -> tuple[wire.BatchHeader, pa.RecordBatch]:
    from kprobe.agent.recorder import constant_column
    from kprobe.schemas.tables import BY_NAME

    et = BY_NAME["syscall"]
    r = np.zeros(n, dtype=et.record)
    r["enter_ns"] = np.arange(n) * 1000 + 10**9 + seq * 10**7
    r["exit_ns"] = r["enter_ns"] + 500
    r["nr"] = np.arange(n) % 2
    r["tgid"] = r["tid"] = 77
    cols = et.columns(r, 1_764_000_000 * 10**9)
    cols["host"] = constant_column(n, "node")
    cols["service"] = constant_column(n, "svc")
    h = wire.BatchHeader("syscall", "node", wire.batch_id("node", "run", seq), seq, n, *wire.ts_range(cols), 0)
    return wire.decode(wire.encode(h, cols))


def test_batches_are_stored_once_and_a_half_written_batch_is_completed(sink: ServerSink) -> None:
    b1, b2 = _batch(1, 1000), _batch(2, 800)
    assert sink.check(*b1) is None
    res = sink.write_batches([b1, b1])
    assert (res.rows, res.duplicate_batches) == (1000, 1)
    assert sink.write_batches([b1]).duplicate_rows == 1000
    # a crash between the ledger's "pending" and the end of the insert: 300 of b2's rows are in
    h2, rb2 = b2
    sink._ledger([h2], PENDING)
    part = np.arange(100, 400, dtype=np.uint32)
    sink._insert("syscall", [(h2, rb2.take(pa.array(part)), part)])
    res = sink.write_batches([b2])
    assert (res.rows, res.duplicate_rows, res.repaired_batches) == (500, 300, 1)
    got = sink.client.execute(f"SELECT batch_row, syscall, ts FROM syscall WHERE batch_id = {h2.batch_id} "
                              "ORDER BY batch_row", settings={"use_numpy": False})
    assert [r[0] for r in got] == list(range(800))
    want_ts = rb2.column("ts").to_pylist()
    assert [r[2] for r in got] == want_ts and {r[1] for r in got} == {b"read", b"write"}
    assert sink.count("syscall") == 1800
    assert sink.client.execute(f"SELECT max(state) FROM {LEDGER} WHERE batch_id = {h2.batch_id}",
                               settings={"use_numpy": False})[0][0] == 2


def test_a_table_made_with_string_columns_keeps_receiving_batches(stack: dict[str, str]) -> None:
    """A syscall table created as String (an older kprobe, or DDL for a server without
    LowCardinality) is written with String blocks: the sink declares what the server has."""
    from kprobe.schemas.store_tables import server_table_defs
    from kprobe.sinks.ddl import ServerFeatures, create_table_sql

    db = f"kp_native_{uuid.uuid4().hex[:8]}"
    boot = Client(stack["CLICKHOUSE_HOST"], port=int(stack["CLICKHOUSE_PORT"]))
    boot.execute(f"CREATE DATABASE `{db}`")
    try:
        syscall = next(d for d in server_table_defs() if d.name == "syscall")
        boot.execute(create_table_sql(syscall, ServerFeatures.from_version("18.14.1"), database=db))
        sink = ServerSink(stack["CLICKHOUSE_HOST"], int(stack["CLICKHOUSE_PORT"]), database=db,
                          http_port=int(stack["CLICKHOUSE_HTTP_PORT"])).connect()
        try:
            assert sink._types["syscall"]["host"] == "String"
            assert sink.write_batches([_batch(1, 500)]).rows == 500
            got = sink.client.execute("SELECT any(toTypeName(host)), count(), uniqExact(syscall) FROM syscall",
                                      settings={"use_numpy": False})
            assert got == [(b"String", 500, 2)]
        finally:
            sink.close()
    finally:
        boot.execute(f"DROP DATABASE IF EXISTS `{db}`")


def test_a_table_from_an_older_kprobe_gets_the_new_columns_in_place(stack: dict[str, str]) -> None:
    """An offcpu table created before the displaced_* columns existed: connecting adds them after their
    predecessors on 18.16 too, and the agent's batches (which carry them) are stored with every value."""
    from dataclasses import replace

    from kprobe.agent.recorder import constant_column
    from kprobe.schemas.store_tables import server_table_defs
    from kprobe.schemas.tables import BY_NAME
    from kprobe.sinks.ddl import ServerFeatures, create_table_sql, session_settings

    db = f"kp_native_{uuid.uuid4().hex[:8]}"
    boot = Client(stack["CLICKHOUSE_HOST"], port=int(stack["CLICKHOUSE_PORT"]))
    boot.execute(f"CREATE DATABASE `{db}`")
    try:
        full = next(d for d in server_table_defs() if d.name == "offcpu")
        old = replace(full, columns=tuple(c for c in full.columns if not c.name.startswith("displaced_")))
        f = ServerFeatures.from_version("18.16.1")
        boot.execute(create_table_sql(old, f, database=db), settings=session_settings(f))
        sink = ServerSink(stack["CLICKHOUSE_HOST"], int(stack["CLICKHOUSE_PORT"]), database=db,
                          http_port=int(stack["CLICKHOUSE_HTTP_PORT"])).connect()
        try:
            names = [n.decode() for (n,) in sink.client.execute(
                f"SELECT name FROM system.columns WHERE database = '{db}' AND table = 'offcpu'",
                settings={"use_numpy": False})]
            assert names == [c.name for c in full.columns]
            r = np.zeros(300, dtype=BY_NAME["offcpu"].record)
            r["off_ns"] = np.arange(300) * 1000 + 10**9
            r["on_ns"] = r["off_ns"] + 700
            r["tgid"] = r["tid"] = 77
            r["displaced_tgid"] = np.arange(300) % 3 + 30
            r["displaced_comm"] = b"batch-job"
            cols = BY_NAME["offcpu"].columns(r, 1_764_000_000 * 10**9)
            cols["host"], cols["service"] = constant_column(300, "node"), constant_column(300, "svc")
            h = wire.BatchHeader("offcpu", "node", wire.batch_id("node", "run", 1), 1, 300, *wire.ts_range(cols), 0)
            assert sink.write_batches([wire.decode(wire.encode(h, cols))]).rows == 300
            got = sink.client.execute("SELECT sum(displaced_tgid), uniqExact(displaced_comm), any(displaced_comm) "
                                      "FROM offcpu", settings={"use_numpy": False})
            assert got == [(int((np.arange(300) % 3 + 30).sum()), 1, b"batch-job")]
            # a batch from an agent not yet upgraded (no displaced_*) is stored with their defaults, not refused
            old_cols = {k: v for k, v in cols.items() if not k.startswith("displaced_")}
            h2 = wire.BatchHeader("offcpu", "node", wire.batch_id("node", "run", 2), 2, 300, *wire.ts_range(old_cols), 0)
            old_batch = wire.decode(wire.encode(h2, old_cols))
            assert sink.check(*old_batch) is None
            assert sink.write_batches([old_batch]).rows == 300
            got = sink.client.execute("SELECT count(), sum(displaced_tgid), countIf(displaced_comm = '') FROM offcpu "
                                      f"WHERE batch_id = {h2.batch_id}", settings={"use_numpy": False})
            assert got == [(300, 0, 300)]
            # a column that was always there is still required
            assert "missing column 'tgid'" in sink.check(h2, old_batch[1].drop_columns(["tgid"]))
        finally:
            sink.close()
    finally:
        boot.execute(f"DROP DATABASE IF EXISTS `{db}`")


def test_check_names_what_does_not_fit(sink: ServerSink) -> None:
    h, rb = _batch(3, 10)
    assert sink.check(h, rb.drop_columns(["tid"])) == "syscall: missing column 'tid'"
    bad = rb.set_column(rb.schema.get_field_index("tid"), "tid", pa.array(["x"] * 10))
    assert "does not fit UInt32" in (sink.check(h, bad) or "")
    assert "unknown table" in (sink.check(wire.BatchHeader("nope", "h", 1, 1, 10, 0, 0, 0), rb) or "")
