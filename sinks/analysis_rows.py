"""Analysis rows (one per analysed operation) into the store's ``causal_analysis`` table (schemas/store_tables.py), idempotently.

Why plain SQL through ``store.query``: it works the same on the embedded chDB
store and on a running recorder's socket (RemoteStore), and there is one row per
slow operation, not per event, so VALUES inserts are cheap enough. Idempotence:
a row is inserted only if no row with the same (op_id, digest) exists, so a
restarted or re-run flow never duplicates rows; a changed analysis (late events)
adds a new row and readers take the newest per op_id (``argMax(..., ts_written)``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

from kprobe.schemas.store_tables import ANALYSIS_COLUMNS, ANALYSIS_TABLE, ANALYSIS_TABLE_DEF
from kprobe.sinks.ddl import ServerFeatures, create_table_sql

_INTS = {n for n, t in ANALYSIS_COLUMNS if "Int" in t}


class SqlStore(Protocol):
    def query(self, sql: str, fmt: str = ...) -> bytes: ...
    def query_rows(self, sql: str) -> list[dict]: ...


def _lit(name: str, v: Any) -> str:
    if name in _INTS:
        return str(int(v))
    s = str(v).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{s}'"


@dataclass
class AnalysisRowsSink:
    store: SqlStore
    features: ServerFeatures | None = None
    inserted: int = 0
    skipped: int = 0

    def __post_init__(self) -> None:
        self.store.query(create_table_sql(ANALYSIS_TABLE_DEF, self.features or ServerFeatures.full()), "TSV")

    def write(self, rows: list[dict[str, Any]]) -> int:
        """Insert rows not already stored (same op_id and digest); returns how many were inserted."""
        if not rows:
            return 0
        ids = ", ".join(_lit("op_id", r["op_id"]) for r in rows)
        have = {(r["op_id"], r["digest"]) for r in self.store.query_rows(
            f"SELECT op_id, digest FROM {ANALYSIS_TABLE} WHERE op_id IN ({ids})")}
        new, seen = [], set()
        for r in rows:
            k = (r["op_id"], r["digest"])
            if k in have or k in seen:
                self.skipped += 1
                continue
            seen.add(k)
            new.append(r)
        if not new:
            return 0
        now = time.time_ns()
        insert = getattr(self.store, "insert_rows", None)
        if insert is not None:      # a native-protocol client: data goes apart from the statement
            insert(ANALYSIS_TABLE, [n for n, _ in ANALYSIS_COLUMNS],
                   [tuple(now if n == "ts_written" else r[n] for n, _ in ANALYSIS_COLUMNS) for r in new])
        else:
            values = ", ".join(
                "(" + ", ".join(_lit(n, now if n == "ts_written" else r[n]) for n, _ in ANALYSIS_COLUMNS) + ")" for r in new)
            self.store.query(f"INSERT INTO {ANALYSIS_TABLE} ({', '.join(n for n, _ in ANALYSIS_COLUMNS)}) VALUES {values}", "TSV")
        self.inserted += len(new)
        return len(new)

    def latest(self, op_id: str) -> dict[str, Any] | None:
        rows = self.store.query_rows(
            f"SELECT * FROM {ANALYSIS_TABLE} WHERE op_id = {_lit('op_id', op_id)} ORDER BY ts_written DESC LIMIT 1")
        return rows[0] if rows else None


class ClickHouseSql:
    """The two calls AnalysisRowsSink needs, over a ClickHouse server's native protocol (scale-out mode)."""

    def __init__(self, host: str, port: int, database: str = "kprobe"):
        import re

        from clickhouse_driver import Client

        from kprobe.sinks.ddl import session_settings

        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", database):
            raise ValueError(f"not a database name: {database!r}")
        boot = Client(host, port=port)
        self.features = ServerFeatures.from_version(str(boot.execute("SELECT version()")[0][0]))
        boot.execute(f"CREATE DATABASE IF NOT EXISTS {database}")
        boot.disconnect()
        self.client = Client(host, port=port, database=database, settings=session_settings(self.features))

    def query(self, sql: str, fmt: str = "TSV") -> bytes:
        self.client.execute(sql)
        return b""

    def insert_rows(self, table: str, columns: list[str], rows: list[tuple]) -> None:
        """clickhouse-driver sends INSERT data in native blocks; literal VALUES in the SQL text would hang it."""
        self.client.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES", rows)

    def query_rows(self, sql: str) -> list[dict]:
        rows, cols = self.client.execute(sql, with_column_types=True)
        names = [c[0] for c in cols]
        return [dict(zip(names, r, strict=True)) for r in rows]
