"""The Cypher both graph sinks run, generated once from the graph schema in causal/graph.py.

Why shared: the embedded engine (ladybug, a Kùzu fork) and Neo4j must hold the
same graph so the documented root-cause query answers the same on both. Only
the statements' common subset is used: ``UNWIND $rows AS r MERGE (n:L {id: r.id})
SET ...`` for nodes, and for edges ``MATCH (a:A), (b:B) WHERE a.id = r.src AND
b.id = r.dst MERGE (a)-[e:T]->(b) SET ...`` (ladybug rejects ``{id: r.src}``
maps that refer to an UNWIND variable inside MATCH, so the ids go in WHERE).
MERGE on the id (nodes) or on (type, src, dst) (edges) is what makes a re-write
of the same analysis a no-op for counts.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from kprobe.causal.graph import NODE_SCHEMA, OPERATION_SCOPED, REL_SCHEMA, ROOT_CAUSE_QUERY, GraphDelta

__all__ = ["Statement", "write_statements", "EXISTING_OPS", "latest_per_op", "ladybug_ddl", "neo4j_constraints", "ROOT_CAUSE_QUERY",
           "WriteResult"]


@dataclass(frozen=True)
class Statement:
    cypher: str
    params: dict[str, Any]


@dataclass
class WriteResult:
    """Rows handed to the engine per statement kind (MERGE: a re-write reports the same, creates nothing)."""

    nodes: int = 0
    edges: int = 0
    statements: int = 0


def _node_merge(label: str) -> str:
    sets = ", ".join(f"n.{p} = r.{p}" for p, _ in NODE_SCHEMA[label] if p != "id")
    return f"UNWIND $rows AS r MERGE (n:{label} {{id: r.id}})" + (f" SET {sets}" if sets else "")


def _edge_merge(rel: str) -> str:
    src, dst, props = REL_SCHEMA[rel]
    sets = ", ".join(f"e.{p} = r.{p}" for p, _ in props)
    return (f"UNWIND $rows AS r MATCH (a:{src}), (b:{dst}) WHERE a.id = r.src AND b.id = r.dst "
            f"MERGE (a)-[e:{rel}]->(b)" + (f" SET {sets}" if sets else ""))


_CHAIN = "MATCH (o:Operation {id: $op})-[:DELAYED_BY|CAUSED_BY*1..8]->(c:Cause)"


def _scoped_delete(label: str) -> str:
    """Stale nodes of one operation, found by traversal from it (a primary-key lookup, no label scan)."""
    if label == "KernelEvents":
        return f"{_CHAIN}-[:EVIDENCED_BY]->(k:KernelEvents) WHERE NOT k.id IN $keep DETACH DELETE k"
    return f"{_CHAIN} WHERE NOT c.id IN $keep DETACH DELETE c"


EXISTING_OPS = "MATCH (o:Operation) WHERE o.id IN $ids RETURN o.id AS id"


def latest_per_op(deltas: list[GraphDelta]) -> list[GraphDelta]:
    """One delta per operation, the last one given (a batch may hold an analysis and its re-run)."""
    by_op: dict[str, GraphDelta] = {}
    for d in deltas:
        by_op.pop(d.op_id, None)
        by_op[d.op_id] = d
    return list(by_op.values())


def write_statements(deltas: list[GraphDelta], existing: set[str] | frozenset[str] = frozenset()) -> list[Statement]:
    """Statements that make the store hold exactly these analyses, batched: one UNWIND per label/type.

    For operations already in the store (``existing``, from ``EXISTING_OPS``), the
    Cause/KernelEvents nodes the new analysis no longer has (a re-run after late
    events changed the tree) are deleted first; shared nodes (processes,
    connections) are only ever merged. Batching matters on the embedded engine:
    each edge statement joins against its node tables once, whatever its row count.
    """
    deltas = latest_per_op(deltas)
    out: list[Statement] = []
    for d in deltas:
        if d.op_id in existing:
            for label in OPERATION_SCOPED:
                out.append(Statement(_scoped_delete(label), {"op": d.op_id, "keep": d.node_ids(label)}))
    by_label: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    by_rel: dict[str, dict[tuple[str, str], dict[str, Any]]] = defaultdict(dict)
    for d in deltas:
        for n in d.nodes:
            by_label[n.label][n.id] = {p: n.props[p] for p, _ in NODE_SCHEMA[n.label]}
        for e in d.edges:
            row = {"src": e.src, "dst": e.dst}
            row.update({p: e.props[p] for p, _ in REL_SCHEMA[e.type][2]})
            by_rel[e.type][(e.src, e.dst)] = row
    for label in NODE_SCHEMA:
        if by_label[label]:
            out.append(Statement(_node_merge(label), {"rows": list(by_label[label].values())}))
    for rel in REL_SCHEMA:
        if by_rel[rel]:
            out.append(Statement(_edge_merge(rel), {"rows": list(by_rel[rel].values())}))
    return out


def ladybug_ddl() -> list[str]:
    """Typed node and relationship tables for the embedded engine (idempotent)."""
    out = []
    for label, props in NODE_SCHEMA.items():
        cols = ", ".join(f"{p} {t}" for p, t in props)
        out.append(f"CREATE NODE TABLE IF NOT EXISTS {label}({cols}, PRIMARY KEY(id))")
    for rel, (src, dst, props) in REL_SCHEMA.items():
        cols = "".join(f", {p} {t}" for p, t in props)
        out.append(f"CREATE REL TABLE IF NOT EXISTS {rel}(FROM {src} TO {dst}{cols})")
    return out


def neo4j_constraints() -> list[str]:
    """Uniqueness on every label's id: MERGE stays correct under concurrent writers and finds nodes by index."""
    return [f"CREATE CONSTRAINT kprobe_{label.lower()}_id IF NOT EXISTS FOR (n:{label}) REQUIRE n.id IS UNIQUE"
            for label in NODE_SCHEMA]
