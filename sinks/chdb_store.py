"""Embedded store: chDB (in-process ClickHouse) MergeTree tables, one per event type.

A chDB data directory is exclusive to one process, so the recorder owns it and
answers other commands over its control socket (see agent/control.py); this
class is also what those commands use directly when no recorder is running.
Retention is enforced by dropping whole partitions (10-minute buckets of the
row time), which works the same on chDB and on old ClickHouse servers.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from kprobe.schemas.store_tables import PARTITION_MINUTES, table_defs
from kprobe.schemas.tables import Columns
from kprobe.sinks import chdb_malloc
from kprobe.sinks.ddl import ServerFeatures, create_table_sql, missing_columns_sql, session_settings
from kprobe.sinks.json_rows import parse_json_each_row

#: a derived table's partition, (bucket, ...): partitioned by the event tables' time bucket first
_DERIVED_PARTITION = re.compile(r"^\((-?\d+),")


def to_arrow(columns: Columns, dictionary: frozenset[str] = frozenset()) -> pa.Table:
    """Arrow table for ``INSERT ... FROM Python(tbl)``. The string columns named in ``dictionary``
    (the LowCardinality ones) go as dictionary arrays when their values repeat: built from object
    identity, and chDB maps a few distinct values instead of hashing every row's string (1M-row
    batches: syscall 956 -> 790 ms, offcpu 1344 -> 967 ms for conversion plus INSERT, A/B in one process)."""
    arrays = {}
    for name, values in columns.items():
        if values.dtype == object and name in dictionary:
            from kprobe.schemas.arrow_strings import string_array  # pandas: imported by the writer only

            arrays[name] = string_array(values)
        elif values.dtype == object:
            arrays[name] = pa.array(values, type=pa.string())
        else:
            arrays[name] = pa.array(np.ascontiguousarray(values))
    return pa.table(arrays)


# The in-process engine sized for an agent beside the service it observes, not for a database
# server: ClickHouse's defaults reserve caches of gigabytes (marks, primary index, index marks) and
# 16 merge threads. Queries here read a few thousand rows of one window; inserts are few and large.
# Its periodic housekeeping (server metrics every second, a memory poll every 100 ms) was a third of
# an idle recorder's CPU: nobody reads those metrics here.
AGENT_ENGINE = "&".join(f"{k}={v}" for k, v in {
    "asynchronous_metrics_update_period_s": 60,
    "asynchronous_heavy_metrics_update_period_s": 600,
    "memory_worker_period_ms": 5000,
    "mark_cache_size": 32 << 20,
    "index_mark_cache_size": 8 << 20,
    "primary_index_cache_size": 16 << 20,
    "query_condition_cache_size": 8 << 20,
    "uncompressed_cache_size": 0,
    "background_pool_size": 2,
    "max_server_memory_usage": 1 << 30,
}.items())


@dataclass
class ChdbStore:
    path: Path
    _lock: threading.Lock = field(default_factory=threading.Lock)
    last_retention: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        chdb_malloc.configure()   # before the engine's library loads: its allocator reads the options once
        from chdb import session  # imported lazily: ~0.5 s, only commands that touch the store pay it

        from kprobe.datadir import private_dir

        private_dir(self.path)  # 0700, ours, not a symlink: it holds the whole recording
        try:
            self._session = session.Session(f"{self.path / 'chdb'}?{AGENT_ENGINE}")
        except Exception as e:  # chDB raises plain RuntimeError for the lock
            if "Another server instance" in str(e) or "Cannot lock" in str(e):
                raise StoreBusyError(
                    f"the store in {self.path} is held by another process (a running `kprobe record`?)"
                ) from e
            raise
        features = ServerFeatures.full()
        # a batch spanning many 10-minute partitions (backfill, replay) must not be refused
        self._settings = " ".join(f"{k} = {v}" for k, v in session_settings(features).items())
        self._low_cardinality: dict[str, frozenset[str]] = {}
        for d in table_defs():
            self._session.query(create_table_sql(d, features))
            self._low_cardinality[d.name] = frozenset(c.name for c in d.columns if c.type.startswith("LowCardinality("))
        self._add_missing_columns(features)

    def _add_missing_columns(self, features: ServerFeatures) -> None:
        """A data directory from an older kprobe keeps its tables: give them today's columns."""
        rows = self.query_rows("SELECT table, name FROM system.columns WHERE database = currentDatabase()")
        for sql in missing_columns_sql(table_defs(), ((r["table"], r["name"]) for r in rows), features):
            self._session.query(sql)

    def arrow(self, table: str, columns: Columns) -> pa.Table:
        """The Arrow table ``write`` inserts (dictionary arrays for the table's LowCardinality columns)."""
        return to_arrow(columns, self._low_cardinality.get(table, frozenset()))

    def write(self, table: str, columns: Columns) -> int:
        tbl = self.arrow(table, columns)
        if tbl.num_rows == 0:
            return 0
        with self._lock:
            settings = f" SETTINGS {self._settings}" if self._settings else ""
            # named: a caller that predates a column (the pod identity ones) stores its default
            names = ", ".join(f"`{c}`" for c in tbl.column_names)
            self._session.query(f"INSERT INTO {table} ({names}) SELECT * FROM Python(tbl){settings}")
        return tbl.num_rows

    def query(self, sql: str, fmt: str = "JSONEachRow") -> bytes:
        with self._lock:
            res = self._session.query(sql, fmt)
        return res.bytes() if hasattr(res, "bytes") else bytes(str(res), "utf-8")

    def query_rows(self, sql: str) -> list[dict]:
        return parse_json_each_row(self.query(sql, "JSONEachRow"))

    def disk_bytes(self) -> int:
        rows = self.query_rows("SELECT sum(bytes_on_disk) AS b FROM system.parts WHERE active AND database = currentDatabase()")
        return int(rows[0]["b"] or 0) if rows else 0

    def enforce_retention(self, max_age_ns: int | None, max_bytes: int | None, now_ns: int) -> int:
        """One retention pass (rules in sinks/retention.py); returns partitions dropped.

        ``last_retention`` keeps what the pass did (drops, trims, future-dated partitions) for stats."""
        from kprobe.sinks import retention

        rows = self.query_rows(
            "SELECT table, partition, sum(bytes_on_disk) AS b FROM system.parts "
            "WHERE active AND database = currentDatabase() GROUP BY table, partition ORDER BY partition"
        )
        ts_of = {d.name: d.ts_column for d in table_defs()}
        parts = [retention.Part(r["table"], int(r["partition"]), int(r["b"])) for r in rows
                 if r["table"] in ts_of and str(r["partition"]).lstrip("-").isdigit()]
        raw_buckets = {x.bucket for x in parts}
        derived = [retention.Part(r["table"], int(m.group(1)), int(r["b"]), expr=str(r["partition"])) for r in rows
                   if r["table"] not in ts_of and (m := _DERIVED_PARTITION.match(str(r["partition"])))]
        orphans = [x for x in derived if x.bucket not in raw_buckets]
        bucket_ns = PARTITION_MINUTES * 60 * 1_000_000_000
        p = retention.plan(parts + [x for x in derived if x.bucket in raw_buckets], now_ns, bucket_ns, max_age_ns,
                           max_bytes)
        for part in p.drop + orphans:
            with self._lock:
                self._session.query(f"ALTER TABLE {part.table} DROP PARTITION {part.expr or part.bucket}")
        trimmed = 0
        for t in p.trims:
            # a derived table's cells of a trimmed bucket are rebuilt from what is left (their builder sees the change)
            for part in (x for x in parts if x.bucket == t.bucket):
                ts = ts_of[part.table]
                q = self.query_rows(f"SELECT quantile({1 - t.keep_fraction:.6f})({ts}) AS c FROM {part.table} "
                                    f"WHERE intDiv({ts}, {bucket_ns}) = {t.bucket}")
                cutoff = int(float(q[0]["c"])) if q and q[0]["c"] is not None else 0
                if cutoff <= 0:
                    continue
                with self._lock:
                    self._session.query(f"ALTER TABLE {part.table} DELETE IN PARTITION {t.bucket} WHERE {ts} < {cutoff} "
                                        "SETTINGS mutations_sync = 2")
                trimmed += 1
        self.last_retention = {"dropped": len(p.drop), "future_dropped": p.future_dropped, "trimmed": trimmed,
                               "derived_orphans_dropped": len(orphans),
                               "bytes_before": p.bytes_before, "bytes_after_estimate": p.bytes_after_estimate}
        return len(p.drop)

    def close(self) -> None:
        with self._lock:
            try:
                self._session.close()
            except Exception:
                pass


class StoreBusyError(RuntimeError):
    """The chDB directory is locked by another process."""
