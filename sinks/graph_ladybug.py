"""Embedded causal graph (the default): ladybug, the maintained Kùzu fork, a Cypher engine in-process.

Why embedded: `kprobe why`/`kprobe graph` on one machine should need no server,
like the chDB event store. The database lives under the data directory
(``<data>/graph/causal.lbug``). Like chDB, a ladybug database is opened by one
process at a time; the writer (the dataflow or `kprobe graph`) owns it while it runs.
Never import ``kuzu`` in the same process (both libraries crash together).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from kprobe.causal.graph import ROOT_CAUSE_QUERY, GraphDelta
from kprobe.sinks.graph_cypher import EXISTING_OPS, WriteResult, ladybug_ddl, write_statements

DB_NAME = "causal.lbug"


def default_path(data_dir: Path) -> Path:
    return Path(data_dir) / "graph" / DB_NAME


class LadybugGraph:
    """A causal graph in an embedded ladybug database; ``write`` is idempotent per analysis."""

    def __init__(self, path: Path):
        import real_ladybug as lb

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = lb.Database(str(path))
        self._conn = lb.Connection(self._db)
        for stmt in ladybug_ddl():
            self._conn.execute(stmt)

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> LadybugGraph:
        return cls(default_path(data_dir))

    def write(self, delta: GraphDelta) -> WriteResult:
        """Replace the operation's subgraph with ``delta`` in one transaction (all or nothing)."""
        return self.write_many([delta])

    def write_many(self, deltas: list[GraphDelta]) -> WriteResult:
        """Several analyses in one transaction and one statement per label/type (much cheaper per analysis)."""
        res = WriteResult()
        if not deltas:
            return res
        with self._lock:
            self._conn.execute("BEGIN TRANSACTION")
            try:
                r = self._conn.execute(EXISTING_OPS, {"ids": [d.op_id for d in deltas]})
                existing = set()
                while r.has_next():
                    existing.add(r.get_next()[0])
                for st in write_statements(deltas, existing):
                    self._conn.execute(st.cypher, st.params)
                    res.statements += 1
                self._conn.execute("COMMIT")
            except Exception:
                self._conn.execute("ROLLBACK")
                raise
        res.nodes, res.edges = sum(len(d.nodes) for d in deltas), sum(len(d.edges) for d in deltas)
        return res

    def query(self, cypher: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        with self._lock:
            r = self._conn.execute(cypher, params or {})
            cols = r.get_column_names()
            out = []
            while r.has_next():
                out.append(dict(zip(cols, r.get_next(), strict=True)))
            return out

    def root_cause(self, op_id: str) -> dict[str, Any] | None:
        rows = self.query(ROOT_CAUSE_QUERY, {"op": op_id})
        return rows[0] if rows else None

    def close(self) -> None:
        with self._lock:
            self._conn.close()
            self._db.close()
