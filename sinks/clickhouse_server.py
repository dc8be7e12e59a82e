"""ClickHouse server sink of the ingest dataflow: exactly-once batches on servers without insert dedup.

Debian's ClickHouse 18.16 deduplicates inserts only on Replicated tables, and a dataflow that
restarts from its last recovery snapshot (or a Kafka message the agent re-sent after an ambiguous
timeout) hands us batches that may already be stored. So every row carries its message's
``batch_id`` and a ledger table ``kprobe_batches`` records each batch twice: ``pending`` before
its rows are inserted and ``done`` after. :meth:`ServerSink.write_batches`:

1. drops repeated batch ids within the call;
2. looks the ids up in the ledger: ``done`` -> already stored, skipped (counted as duplicates);
3. ``pending`` (a crash or failure between the two ledger writes) -> counts that batch's rows in
   its table (``WHERE batch_id = x AND ts BETWEEN min_ts AND max_ts``: partition-pruned by
   time): all there -> mark done; none -> insert; partly there (a multi-partition insert cut
   short) -> ``ALTER TABLE … DELETE WHERE batch_id = x``, wait for the mutation, insert again;
4. writes ``pending`` rows, inserts the rows (one INSERT per table for all batches of the call),
   writes ``done`` rows.

Any exception leaves the call's batches uncommitted for the caller, who retries the same batches
(the dataflow never advances its Kafka offsets past a failed write); step 3 makes the retry exact.
Only one writer handles a given batch id at a time: a Kafka partition is read by one worker, and
a host's batches all live in one partition.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from clickhouse_driver import Client

from kprobe.sinks.chdb_store import table_defs
from kprobe.sinks.ddl import Column, ServerFeatures, TableDef, create_table_sql, session_settings
from kprobe.topics.wire import BatchHeader, Columns

LEDGER = "kprobe_batches"
PENDING, DONE = 1, 2
LEDGER_DEF = TableDef(
    LEDGER,
    (Column("batch_id", "UInt64"), Column("table", "String"), Column("host", "String"), Column("rows", "UInt64"),
     Column("min_ts", "UInt64"), Column("max_ts", "UInt64"), Column("state", "UInt8"), Column("at", "UInt64")),
    order_by=("batch_id",),
    ts_column="at",
    partition_minutes=24 * 60,
)


def server_table_defs() -> list[TableDef]:
    """The embedded store's tables plus ``batch_id`` (the dedup key), and the ledger."""
    defs = [TableDef(d.name, d.columns + (Column("batch_id", "UInt64"),), d.order_by, d.ts_column,
                     d.partition_minutes, d.ttl_seconds, d.skip_indexes) for d in table_defs()]
    return defs + [LEDGER_DEF]


@dataclass
class WriteResult:
    rows: int = 0
    batches: int = 0
    duplicate_rows: int = 0
    duplicate_batches: int = 0
    repaired_batches: int = 0
    tables: dict[str, int] = field(default_factory=dict)  # rows newly stored per table


@dataclass
class ServerSink:
    host: str = "127.0.0.1"
    port: int = 9000
    database: str = "kprobe"
    user: str = "default"
    password: str = ""
    _client: Client | None = field(default=None, repr=False)
    features: ServerFeatures | None = None

    def connect(self) -> ServerSink:
        boot = Client(self.host, port=self.port, user=self.user, password=self.password)
        version = boot.execute("SELECT version()")[0][0]
        self.features = ServerFeatures.from_version(version)
        boot.execute(f"CREATE DATABASE IF NOT EXISTS `{self.database}`")
        boot.disconnect()
        self._client = Client(self.host, port=self.port, user=self.user, password=self.password,
                              database=self.database, settings={**session_settings(self.features), "use_numpy": True})
        self._columns: dict[str, list[str]] = {}
        self._types: dict[str, dict[str, str]] = {}
        for d in server_table_defs():
            self._client.execute(create_table_sql(d, self.features))
            self._columns[d.name] = [c.name for c in d.columns]
            self._types[d.name] = {c.name: c.type for c in d.columns}
        return self

    def check(self, h: BatchHeader, cols: Columns) -> str | None:
        """Why this batch cannot be stored (-> dead-letter topic), or None. Checked before any write,
        so one bad message never blocks the good ones behind it."""
        types = self._types.get(h.table)
        if types is None or h.table == LEDGER:
            return f"unknown table {h.table!r}"
        for name, type_ in types.items():
            if name == "batch_id":
                continue
            col = cols.get(name)
            if col is None:
                return f"{h.table}: missing column {name!r}"
            if len(col) != h.rows:
                return f"{h.table}.{name}: {len(col)} values for {h.rows} rows"
            want_str = type_.endswith("String)") or type_ == "String"
            if want_str != (col.dtype == object) or (not want_str and col.dtype.kind not in "ui"):
                return f"{h.table}.{name}: {col.dtype} does not fit {type_}"
        return None

    @property
    def client(self) -> Client:
        assert self._client is not None, "connect() first"
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.disconnect()

    # -- exactly-once write ---------------------------------------------------------------------
    def write_batches(self, batches: list[tuple[BatchHeader, Columns]]) -> WriteResult:
        res = WriteResult()
        unique: dict[int, tuple[BatchHeader, Columns]] = {}
        for h, cols in batches:
            if h.batch_id in unique:
                res.duplicate_rows += h.rows
                res.duplicate_batches += 1
            else:
                unique[h.batch_id] = (h, cols)
        if not unique:
            return res
        states = self._ledger_states(list(unique))
        todo: list[tuple[BatchHeader, Columns]] = []
        for bid, (h, cols) in unique.items():
            state = states.get(bid, 0)
            if state == DONE:
                res.duplicate_rows += h.rows
                res.duplicate_batches += 1
            elif state == PENDING and self._repair(h):
                res.duplicate_rows += h.rows  # all rows were there: nothing to insert
                res.duplicate_batches += 1
                res.repaired_batches += 1
            else:
                todo.append((h, cols))
        if not todo:
            return res
        self._ledger([h for h, _ in todo], PENDING)
        by_table: dict[str, list[tuple[BatchHeader, Columns]]] = {}
        for h, cols in todo:
            by_table.setdefault(h.table, []).append((h, cols))
        for table, items in by_table.items():
            self._insert(table, items)
        self._ledger([h for h, _ in todo], DONE)
        res.rows = sum(h.rows for h, _ in todo)
        res.batches = len(todo)
        for h, _ in todo:
            res.tables[h.table] = res.tables.get(h.table, 0) + h.rows
        return res

    def _ledger_states(self, ids: list[int]) -> dict[int, int]:
        rows = self.client.execute(
            f"SELECT batch_id, max(state) FROM {LEDGER} WHERE batch_id IN %(ids)s GROUP BY batch_id",
            {"ids": tuple(ids)}, settings={"use_numpy": False})
        return {int(b): int(s) for b, s in rows}

    def _ledger(self, headers: list[BatchHeader], state: int) -> None:
        now = time.time_ns()
        n = len(headers)
        data = [
            np.array([h.batch_id for h in headers], dtype=np.uint64),
            np.array([h.table for h in headers], dtype=object),
            np.array([h.host for h in headers], dtype=object),
            np.array([h.rows for h in headers], dtype=np.uint64),
            np.array([h.min_ts for h in headers], dtype=np.uint64),
            np.array([h.max_ts for h in headers], dtype=np.uint64),
            np.full(n, state, dtype=np.uint8),
            np.full(n, now, dtype=np.uint64),
        ]
        self.client.execute(f"INSERT INTO {LEDGER} ({', '.join(self._columns[LEDGER])}) VALUES", data, columnar=True)

    def _repair(self, h: BatchHeader) -> bool:
        """A batch left pending: True if all its rows are stored (now marked done), else clean it up."""
        n = self.client.execute(
            f"SELECT count() FROM `{h.table}` WHERE batch_id = %(b)s AND ts >= %(lo)s AND ts <= %(hi)s",
            {"b": h.batch_id, "lo": h.min_ts, "hi": h.max_ts}, settings={"use_numpy": False})[0][0]
        if n == h.rows:
            self._ledger([h], DONE)
            return True
        if n:
            self.client.execute(f"ALTER TABLE `{h.table}` DELETE WHERE batch_id = {int(h.batch_id)}")
            self._wait_mutations(h.table)
        return False

    def _wait_mutations(self, table: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            left = self.client.execute(
                "SELECT count() FROM system.mutations WHERE database = %(d)s AND table = %(t)s AND is_done = 0",
                {"d": self.database, "t": table}, settings={"use_numpy": False})[0][0]
            if not left:
                return
            time.sleep(0.05)
        raise TimeoutError(f"ALTER DELETE on {table} did not finish in {timeout} s")

    def _insert(self, table: str, items: list[tuple[BatchHeader, Columns]]) -> None:
        names = self._columns.get(table)
        if names is None:
            raise KeyError(f"no table {table!r} on the server")
        data = []
        for name in names:
            if name == "batch_id":
                data.append(np.concatenate([np.full(h.rows, h.batch_id, dtype=np.uint64) for h, _ in items]))
                continue
            parts = [cols[name] for _, cols in items]
            data.append(parts[0] if len(parts) == 1 else np.concatenate(parts))
        self.client.execute(f"INSERT INTO `{table}` ({', '.join(f'`{n}`' for n in names)}) VALUES", data,
                            columnar=True)

    # -- queries used by tests, bench and stats -----------------------------------------------
    def count(self, table: str, where: str = "1") -> int:
        return int(self.client.execute(f"SELECT count() FROM `{table}` WHERE {where}",
                                       settings={"use_numpy": False})[0][0])
