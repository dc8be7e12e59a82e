"""A time window of a ClickHouse server's tables, copied into a private chDB store, so the causal engine can
answer over scale-out data (every host's rows) exactly as it does over an embedded recording.

Why copy instead of querying the server: the engine's reads are modern ClickHouse SQL (``toJSONString``,
tuples in ``groupArray``, settings of 2025 servers) that a ClickHouse 18.16 server does not parse, and a
cross-host answer reads the same few seconds of a few hosts many times (one view per host, per round).
One plain ``SELECT`` per table over the window, on any server version, then every read is local.
Only integers and checked names reach the SQL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kprobe.schemas.store_tables import HOSTS_TABLE, PROCESSES_TABLE, SPANS_TABLE, TableDef, table_defs

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_NUMPY = {"UInt8": np.uint8, "UInt16": np.uint16, "UInt32": np.uint32, "UInt64": np.uint64,
          "Int8": np.int8, "Int16": np.int16, "Int32": np.int32, "Int64": np.int64}
UNTIMED = (PROCESSES_TABLE, HOSTS_TABLE)   # small, and needed whatever their rows' times: copied whole


def _numpy_type(ch_type: str) -> Any:
    inner = ch_type[len("LowCardinality("):-1] if ch_type.startswith("LowCardinality(") else ch_type
    return _NUMPY.get(inner, object)


@dataclass
class WindowCopy:
    """Counts of what was copied, per table; ``missing_tables``: tables the server does not have."""

    rows: dict[str, int] = field(default_factory=dict)
    missing_tables: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def copy_window(client: Any, database: str, store: Any, from_ns: int, to_ns: int,
                defs: list[TableDef] | None = None) -> WindowCopy:
    """Rows of every table with a time in [from_ns, to_ns] (and the processes and hosts tables whole) from the
    server (a clickhouse_driver Client) into ``store`` (a ChdbStore). Columns the server lacks (an older
    schema) are left to the store's defaults."""
    if not _NAME.fullmatch(database):
        raise ValueError(f"not a database name: {database!r}")
    lo, hi = int(from_ns), int(to_ns)
    have: dict[str, set[str]] = {}
    for table, name in client.execute(f"SELECT table, name FROM system.columns WHERE database = '{database}'"):
        have.setdefault(table, set()).add(name)
    out = WindowCopy()
    for d in defs if defs is not None else table_defs():
        if d.name not in have:
            out.missing_tables.append(d.name)
            continue
        cols = [c for c in d.columns if c.name in have[d.name]]
        ts = d.ts_column if d.name != SPANS_TABLE.name else "ts_ns"
        where = "1" if d.name in UNTIMED else f"{ts} >= {lo} AND {ts} <= {hi}"
        names = ", ".join(f"`{c.name}`" for c in cols)
        data = client.execute(f"SELECT {names} FROM {database}.{d.name} WHERE {where}", columnar=True)
        n = len(data[0]) if data else 0
        out.rows[d.name] = n
        if not n:
            continue
        columns = {}
        for c, values in zip(cols, data, strict=True):
            t = _numpy_type(c.type)
            columns[c.name] = np.array(list(values), dtype=object) if t is object else np.asarray(values, dtype=t)
        store.write(d.name, columns)
    return out
