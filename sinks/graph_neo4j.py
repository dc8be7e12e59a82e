"""Causal graph in Neo4j over Bolt (official ``neo4j`` driver): the scale-out graph sink.

Same statements as the embedded sink (sinks/graph_cypher.py), run in one write
transaction per analysis, so a dataflow worker killed mid-write leaves either the
old or the new subgraph of that operation, and a retry MERGEs onto it.
Uniqueness constraints on every label's ``id`` are created at start (idempotent).
"""

from __future__ import annotations

from typing import Any

from kprobe.causal.graph import ROOT_CAUSE_QUERY, GraphDelta
from kprobe.sinks.graph_cypher import EXISTING_OPS, WriteResult, neo4j_constraints, write_statements


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """'none' / None / '' = no authentication; else 'user/password' (NEO4J_AUTH convention)."""
    if not value or value == "none":
        return None
    user, _, password = value.partition("/")
    return (user, password)


class Neo4jGraph:
    def __init__(self, uri: str, auth: tuple[str, str] | None = None, database: str | None = None):
        import neo4j

        self.uri = uri
        self._driver = neo4j.GraphDatabase.driver(uri, auth=auth)
        self._database = database
        self._driver.verify_connectivity()
        with self._driver.session(database=database) as s:
            for c in neo4j_constraints():
                s.run(c).consume()

    def write(self, delta: GraphDelta) -> WriteResult:
        return self.write_many([delta])

    def write_many(self, deltas: list[GraphDelta]) -> WriteResult:
        """All analyses in one write transaction (retried by the driver on transient errors)."""
        res = WriteResult(nodes=sum(len(d.nodes) for d in deltas), edges=sum(len(d.edges) for d in deltas))
        if not deltas:
            return res

        def work(tx: Any) -> int:
            existing = {r["id"] for r in tx.run(EXISTING_OPS, ids=[d.op_id for d in deltas])}
            stmts = write_statements(deltas, existing)
            for st in stmts:
                tx.run(st.cypher, st.params).consume()
            return len(stmts)

        with self._driver.session(database=self._database) as s:
            res.statements = s.execute_write(work)
        return res

    def query(self, cypher: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        records, _, _ = self._driver.execute_query(cypher, params or {}, database_=self._database)
        return [dict(r) for r in records]

    def root_cause(self, op_id: str) -> dict[str, Any] | None:
        rows = self.query(ROOT_CAUSE_QUERY, {"op": op_id})
        return rows[0] if rows else None

    def close(self) -> None:
        self._driver.close()
