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

__all__ = ["Statement", "write_statements", "ladybug_ddl", "neo4j_constraints", "ROOT_CAUSE_QUERY",
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


def _scoped_delete(label: str) -> str:
    return f"MATCH (n:{label}) WHERE n.op = $op AND NOT n.id IN $keep DETACH DELETE n"


def write_statements(delta: GraphDelta) -> list[Statement]:
    """Statements that make the store hold exactly this analysis for ``delta.op_id``.

    Cause/KernelEvents nodes of the same operation that the new analysis no
    longer has (a re-run after late events changed the tree) are deleted first;
    shared nodes (processes, connections) are only ever merged.
    """
    out: list[Statement] = []
    for label in OPERATION_SCOPED:
        out.append(Statement(_scoped_delete(label), {"op": delta.op_id, "keep": delta.node_ids(label)}))
    by_label: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for n in delta.nodes:
        props = {p: n.props[p] for p, _ in NODE_SCHEMA[n.label]}
        by_label[n.label].append(props)
    for label in NODE_SCHEMA:
        if by_label[label]:
            out.append(Statement(_node_merge(label), {"rows": by_label[label]}))
    by_rel: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in delta.edges:
        row = {"src": e.src, "dst": e.dst}
        row.update({p: e.props[p] for p, _ in REL_SCHEMA[e.type][2]})
        by_rel[e.type].append(row)
    for rel in REL_SCHEMA:
        if by_rel[rel]:
            out.append(Statement(_edge_merge(rel), {"rows": by_rel[rel]}))
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
