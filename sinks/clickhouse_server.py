"""ClickHouse server sink of the ingest dataflow: exactly-once batches on servers without insert dedup.

Debian's ClickHouse 18.16 deduplicates inserts only on Replicated tables, and a dataflow that
restarts from its last recovery snapshot (or a Kafka message the agent re-sent after an ambiguous
timeout) hands us batches that may already be stored. So every row carries its message's
``batch_id`` and a ledger table ``kprobe_batches`` records each batch twice: ``pending`` before
its rows are inserted and ``done`` after. :meth:`ServerSink.write_batches`:

1. drops repeated batch ids within the call;
2. looks the ids up in the ledger: ``done`` -> already stored, skipped (counted as duplicates);
3. ``pending`` (a crash or failure between the two ledger writes) -> reads which of that batch's
   rows are in its table (every row carries ``batch_row``, its index in the batch; the lookup is
   ``WHERE batch_id = x AND ts BETWEEN min_ts AND max_ts``, partition-pruned by time): all
   there -> mark done; otherwise insert exactly the missing rows (an insert cut short across
   partitions leaves some). No ALTER DELETE: mutations on 18.16 are asynchronous and interact
   with merges; inserting only what is missing needs no mutation at all;
4. writes ``pending`` rows, inserts the rows (one INSERT per table for all batches of the call),
   writes ``done`` rows.

Any exception leaves the call's batches uncommitted for the caller, who retries the same batches
(the dataflow never advances its Kafka offsets past a failed write); step 3 makes the retry exact.
Only one writer handles a given batch id at a time: a Kafka partition is read by one worker, and
a host's batches all live in one partition.

The rows go over ClickHouse's HTTP interface as ``INSERT ... FORMAT Native``, built straight from
the messages' Arrow batches (:mod:`kprobe.sinks.native`): one block per message, all blocks of a
table in one request (the server squashes them into parts of up to ~1M rows). clickhouse-driver's
INSERT cost ~0.7 us of client CPU a row, the Native body ~0.1 us. The ledger and the queries stay on
the native protocol (clickhouse-driver). A refused insert raises :class:`InsertRefused` (the data's
fault: the caller dead-letters it); a connection failure raises ``OSError`` (retry).
"""

from __future__ import annotations

import http.client
import time
import urllib.parse
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from clickhouse_driver import Client
from clickhouse_driver.errors import ServerException

from kprobe.schemas.store_tables import LEDGER, server_table_defs
from kprobe.schemas.tables import COLUMNS_ADDED_LATER
from kprobe.sinks import native
from kprobe.sinks.ddl import ServerFeatures, create_table_sql, missing_columns_sql, session_settings
from kprobe.topics.wire import BatchHeader

PENDING, DONE = 1, 2  # values of the ledger's ``state`` column


def _text(v: str | bytes) -> str:
    return v.decode() if isinstance(v, bytes) else v


def is_string(type_: str) -> bool:
    """String, LowCardinality(String), Nullable(String): the columns sent as (encoded) objects."""
    return type_ == "String" or type_.endswith("String)")


class InsertRefused(Exception):
    """The server refused an INSERT (bad data, a type it cannot take): retrying will not help."""


# Server error codes that are about the server's state, not the data: retried like an outage.
# 159 TIMEOUT_EXCEEDED, 202 TOO_MANY_SIMULTANEOUS_QUERIES, 241 MEMORY_LIMIT_EXCEEDED, 252 TOO_MANY_PARTS.
TRANSIENT_CODES = frozenset({159, 202, 241, 252})


def _error_code(body: bytes) -> int | None:
    """The ``Code: NNN`` a ClickHouse error response starts with."""
    head = body[:40].decode("utf-8", "replace")
    if head.startswith("Code: "):
        digits = head[6:].split(",", 1)[0].strip()
        if digits.isdigit():
            return int(digits)
    return None


def arrow_is_string(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t)


@dataclass
class WriteResult:
    rows: int = 0
    batches: int = 0
    duplicate_rows: int = 0
    duplicate_batches: int = 0
    repaired_batches: int = 0
    tables: dict[str, int] = field(default_factory=dict)  # rows newly stored per table


def _default_column(ch_type: str, n: int) -> pa.Array | np.ndarray:
    if is_string(ch_type):
        return pa.array([""] * n, type=pa.string())
    dtype = native.NUMPY_OF.get(ch_type)
    if dtype is None:
        raise native.NativeError(f"no default for a missing {ch_type} column")
    return np.zeros(n, dtype=dtype)


@dataclass
class ServerSink:
    host: str = "127.0.0.1"
    port: int = 9000
    database: str = "kprobe"
    user: str = "default"
    password: str = ""
    http_port: int = 8123  # rows go to the HTTP interface (Native format), everything else to ``port``
    http_timeout_s: float = 300.0
    _client: Client | None = field(default=None, repr=False)
    features: ServerFeatures | None = None

    def connect(self) -> ServerSink:
        boot = Client(self.host, port=self.port, user=self.user, password=self.password)
        version = boot.execute("SELECT version()")[0][0]
        self.features = ServerFeatures.from_version(version)
        boot.execute(f"CREATE DATABASE IF NOT EXISTS `{self.database}`")
        boot.disconnect()
        # strings_as_bytes: the ledger's few strings are encoded here; results of queries are bytes too.
        self._client = Client(self.host, port=self.port, user=self.user, password=self.password,
                              database=self.database, settings={**session_settings(self.features), "use_numpy": True,
                                                                "strings_as_bytes": True})
        self._columns: dict[str, list[str]] = {}
        self._types: dict[str, dict[str, str]] = {}
        self._ts_col: dict[str, str] = {}
        for d in server_table_defs():
            self._client.execute(create_table_sql(d, self.features))
            self._columns[d.name] = [c.name for c in d.columns]
            self._ts_col[d.name] = d.ts_column
        self._add_missing_columns()
        self._types = self._server_types()
        return self

    def _add_missing_columns(self) -> None:
        """Tables created by an older kprobe get today's columns (several sinks may race: a column that
        another one added meanwhile is fine)."""
        assert self.features is not None
        rows = self.client.execute("SELECT table, name FROM system.columns WHERE database = %(db)s",
                                   {"db": self.database})
        for sql in missing_columns_sql(server_table_defs(), ((_text(t), _text(n)) for t, n in rows), self.features):
            try:
                self.client.execute(sql)
            except ServerException as e:
                if "already exists" not in str(e):
                    raise

    def _server_types(self) -> dict[str, dict[str, str]]:
        """Each table's column types as the server has them, which Native blocks must declare: a
        table created by an older kprobe (or for a server without LowCardinality) keeps String
        where today's DDL says LowCardinality(String), and 18.16 does not convert between them."""
        rows = self.client.execute("SELECT table, name, type FROM system.columns WHERE database = %(db)s",
                                   {"db": self.database})
        on_server: dict[str, dict[str, str]] = {}
        for table, name, type_ in rows:
            on_server.setdefault(_text(table), {})[_text(name)] = _text(type_)
        types: dict[str, dict[str, str]] = {}
        for table, names in self._columns.items():
            have = on_server.get(table, {})
            missing = [n for n in names if n not in have]
            if missing:
                raise RuntimeError(f"table {self.database}.{table} on the server lacks columns {missing} "
                                   "(created by another kprobe version? drop it or use another --database)")
            types[table] = {n: have[n] for n in names}
        return types

    def check(self, h: BatchHeader, rb: pa.RecordBatch) -> str | None:
        """Why this batch cannot be stored (-> dead-letter topic), or None. Checked before any write,
        so one bad message never blocks the good ones behind it."""
        types = self._types.get(h.table)
        if types is None or h.table == LEDGER:
            return f"unknown table {h.table!r}"
        if rb.num_rows != h.rows:
            return f"{h.table}: {rb.num_rows} rows for a header of {h.rows}"
        schema = rb.schema
        for name, type_ in types.items():
            if name in ("batch_id", "batch_row"):
                continue
            i = schema.get_field_index(name)
            if i < 0:
                if name in COLUMNS_ADDED_LATER.get(h.table, ()):
                    continue      # an older agent's batch (rolling upgrade, old archive): stored with the default
                return f"{h.table}: missing column {name!r}"
            t = schema.field(i).type
            want_str = is_string(type_)
            if want_str != arrow_is_string(t) or (not want_str and not pa.types.is_integer(t)):
                return f"{h.table}.{name}: {t} does not fit {type_}"
            if not want_str and rb.column(i).null_count:
                return f"{h.table}.{name}: {rb.column(i).null_count} nulls in a {type_} column"
        return None

    @property
    def client(self) -> Client:
        assert self._client is not None, "connect() first"
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.disconnect()

    # -- exactly-once write ---------------------------------------------------------------------
    def write_batches(self, batches: list[tuple[BatchHeader, pa.RecordBatch]]) -> WriteResult:
        res = WriteResult()
        unique: dict[int, tuple[BatchHeader, pa.RecordBatch]] = {}
        for h, cols in batches:
            if h.batch_id in unique:
                res.duplicate_rows += h.rows
                res.duplicate_batches += 1
            else:
                unique[h.batch_id] = (h, cols)
        if not unique:
            return res
        states = self._ledger_states(list(unique))
        todo: list[tuple[BatchHeader, pa.RecordBatch, np.ndarray]] = []  # header, rows, row indexes to insert
        for bid, (h, rb) in unique.items():
            state = states.get(bid, 0)
            if state == DONE:
                res.duplicate_rows += h.rows
                res.duplicate_batches += 1
                continue
            rows = np.arange(h.rows, dtype=np.uint32)
            if state == PENDING:
                rows = self._missing_rows(h)
                res.repaired_batches += 1
                res.duplicate_rows += h.rows - len(rows)
                if len(rows) == 0:  # all rows were there: only the ledger lacked "done"
                    self._ledger([h], DONE)
                    res.duplicate_batches += 1
                    continue
                rb = rb.take(pa.array(rows))
            todo.append((h, rb, rows))
        if not todo:
            return res
        self._ledger([h for h, _, _ in todo], PENDING)
        by_table: dict[str, list[tuple[BatchHeader, pa.RecordBatch, np.ndarray]]] = {}
        for item in todo:
            by_table.setdefault(item[0].table, []).append(item)
        for table, items in by_table.items():
            self._insert(table, items)
        self._ledger([h for h, _, _ in todo], DONE)
        res.rows = sum(len(r) for _, _, r in todo)
        res.batches = len(todo)
        for h, _, r in todo:
            res.tables[h.table] = res.tables.get(h.table, 0) + len(r)
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
            np.array([h.table.encode() for h in headers], dtype=object),
            np.array([h.host.encode() for h in headers], dtype=object),
            np.array([h.rows for h in headers], dtype=np.uint64),
            np.array([h.min_ts for h in headers], dtype=np.uint64),
            np.array([h.max_ts for h in headers], dtype=np.uint64),
            np.full(n, state, dtype=np.uint8),
            np.full(n, now, dtype=np.uint64),
        ]
        self.client.execute(f"INSERT INTO {LEDGER} ({', '.join(self._columns[LEDGER])}) VALUES", data, columnar=True)

    def _missing_rows(self, h: BatchHeader) -> np.ndarray:
        """Indexes of a pending batch's rows that are not in its table (sorted, uint32)."""
        ts = self._ts_col.get(h.table, "ts")
        bounded = f" AND `{ts}` >= %(lo)s AND `{ts}` <= %(hi)s" if h.max_ts else ""  # prunes partitions
        present = self.client.execute(
            f"SELECT DISTINCT batch_row FROM `{h.table}` WHERE batch_id = %(b)s{bounded}",
            {"b": h.batch_id, "lo": h.min_ts, "hi": h.max_ts}, settings={"use_numpy": False})
        have = np.array([r[0] for r in present], dtype=np.uint32)
        return np.setdiff1d(np.arange(h.rows, dtype=np.uint32), have).astype(np.uint32)

    def native_body(self, table: str, items: list[tuple[BatchHeader, pa.RecordBatch, np.ndarray]]
                    ) -> list[bytes | memoryview]:
        """The INSERT body: one Native block per batch (its columns in table order, plus batch_id/row)."""
        names = self._columns.get(table)
        if names is None:
            raise KeyError(f"no table {table!r} on the server")
        types = self._types[table]
        body: list[bytes | memoryview] = []
        for h, rb, rows in items:
            n = len(rows)
            cols: list[tuple[str, str, pa.Array | np.ndarray]] = []
            for name in names:
                if name == "batch_id":
                    cols.append((name, types[name], np.full(n, h.batch_id, dtype=np.uint64)))
                elif name == "batch_row":
                    cols.append((name, types[name], rows.astype(np.uint32, copy=False)))
                elif rb.schema.get_field_index(name) < 0:        # checked: a column newer than the batch
                    cols.append((name, types[name], _default_column(types[name], n)))
                else:
                    cols.append((name, types[name], rb.column(name)))
            body += native.block(cols, n)
        return body

    def _insert(self, table: str, items: list[tuple[BatchHeader, pa.RecordBatch, np.ndarray]]) -> None:
        try:
            body = self.native_body(table, items)  # KeyError for a table the server lacks
        except native.NativeError as e:
            raise InsertRefused(f"{table}: {e}") from e
        query = f"INSERT INTO `{table}` ({', '.join(f'`{n}`' for n in self._columns[table])}) FORMAT Native"
        self.http_post(query, body)

    def http_post(self, query: str, body: list[bytes | memoryview]) -> bytes:
        """POST ``body`` with ``query`` to the HTTP interface; one connection per request (a kept-alive
        one can be closed by the server's keep-alive timeout just as we send, which would be an
        ambiguous failure). Refused -> InsertRefused; unreachable or cut -> OSError."""
        params = {"database": self.database, "query": query, "user": self.user, **session_settings(self.features)}
        if self.password:
            params["password"] = self.password
        conn = http.client.HTTPConnection(self.host, self.http_port, timeout=self.http_timeout_s)
        try:
            conn.request("POST", "/?" + urllib.parse.urlencode(params), body=body,
                         headers={"Content-Length": str(sum(len(b) for b in body)), "Connection": "close"})
            resp = conn.getresponse()
            answer = resp.read()
        except http.client.HTTPException as e:
            raise ConnectionError(f"ClickHouse HTTP {self.host}:{self.http_port}: {e!r}") from e
        finally:
            conn.close()
        if resp.status != 200:
            code = _error_code(answer)
            text = answer[:500].decode("utf-8", "replace")
            if code in TRANSIENT_CODES or resp.status in (502, 503, 504):
                raise ConnectionError(f"ClickHouse busy (HTTP {resp.status}): {text}")
            raise InsertRefused(f"HTTP {resp.status}: {text}")
        return answer

    # -- queries used by tests, bench and stats -----------------------------------------------
    def count(self, table: str, where: str = "1") -> int:
        return int(self.client.execute(f"SELECT count() FROM `{table}` WHERE {where}",
                                       settings={"use_numpy": False})[0][0])
