"""A causal ``Analysis`` as a property graph: nodes and edges with stable, deterministic ids.

Why a graph: the analysis is a tree of causes per operation, but processes,
connections and culprits are shared between operations; in a graph "which
operations did batch-job delay today" is one query. Every id is derived from
what it names (host, pid, the cause's path of (kind, culprit) keys under its
operation), never from a counter or a clock, so writing the same analysis again
MERGEs onto the same nodes and edges and duplicates nothing.

Shape (labels, properties and relationship types are declared in ``NODE_SCHEMA`` /
``REL_SCHEMA`` so an embedded engine with a typed schema and Neo4j get the same graph):

    (Operation)-[:DELAYED_BY {delay_ns, rank, on_chain}]->(Cause)   direct causes, ranked
    (Cause)-[:CAUSED_BY {delay_ns, rank, on_chain}]->(Cause)         what explains a cause
    (Cause)-[:PREEMPTED_BY {delay_ns, cpu}]->(Process)               cpu_preemption culprit
    (Cause)-[:WOKEN_BY {delay_ns}]->(Process)                        the thread whose wake-up ended a wait
    (Cause)-[:BLAMES {delay_ns}]->(Process)                          other culprits (reclaim, disk issuer, ...)
    (Cause)-[:WAITED_ON {delay_ns}]->(Connection)                    the TCP connection a wait was on
    (Cause)-[:EVIDENCED_BY {count, total_ns}]->(KernelEvents)        kernel events, aggregated per type
    (Operation)-[:RAN_IN]->(Process)                                 the victim process

``on_chain`` marks the analysis' chain (largest direct cause, then its largest
significant child, ...), so the root cause is the end of the longest on-chain
path from the operation: see ``ROOT_CAUSE_QUERY``.

Pure Python: no engine, no I/O; sinks/graph_*.py write a ``GraphDelta``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from kprobe.causal.model import Analysis, Cause

# label -> ((property, type), ...); "id" (STRING) is the primary key of every label.
NODE_SCHEMA: dict[str, tuple[tuple[str, str], ...]] = {
    "Operation": (("id", "STRING"), ("kind", "STRING"), ("name", "STRING"), ("host", "STRING"),
                  ("pid", "INT64"), ("tid", "INT64"), ("comm", "STRING"), ("start_ns", "INT64"),
                  ("end_ns", "INT64"), ("wall_ns", "INT64"), ("on_cpu_ns", "INT64"), ("runq_ns", "INT64"),
                  ("blocked_ns", "INT64"), ("root_kind", "STRING"), ("root_delay_ns", "INT64")),
    "Cause": (("id", "STRING"), ("op", "STRING"), ("kind", "STRING"), ("summary", "STRING"),
              ("delay_ns", "INT64"), ("culprit_pid", "INT64"), ("culprit_tid", "INT64"),
              ("culprit_comm", "STRING"), ("cpu", "INT64"), ("depth", "INT64"), ("is_root", "BOOLEAN")),
    "Process": (("id", "STRING"), ("host", "STRING"), ("pid", "INT64"), ("comm", "STRING")),
    "Connection": (("id", "STRING"), ("host", "STRING"), ("saddr", "STRING"), ("sport", "INT64"),
                   ("daddr", "STRING"), ("dport", "INT64")),
    "KernelEvents": (("id", "STRING"), ("op", "STRING"), ("type", "STRING"), ("count", "INT64"),
                     ("total_ns", "INT64"), ("detail", "STRING")),
}

# relationship type -> (from label, to label, ((property, type), ...))
REL_SCHEMA: dict[str, tuple[str, str, tuple[tuple[str, str], ...]]] = {
    "DELAYED_BY": ("Operation", "Cause", (("delay_ns", "INT64"), ("rank", "INT64"), ("on_chain", "BOOLEAN"))),
    "CAUSED_BY": ("Cause", "Cause", (("delay_ns", "INT64"), ("rank", "INT64"), ("on_chain", "BOOLEAN"))),
    "PREEMPTED_BY": ("Cause", "Process", (("delay_ns", "INT64"), ("cpu", "INT64"))),
    "WOKEN_BY": ("Cause", "Process", (("delay_ns", "INT64"),)),
    "BLAMES": ("Cause", "Process", (("delay_ns", "INT64"),)),
    "WAITED_ON": ("Cause", "Connection", (("delay_ns", "INT64"),)),
    "EVIDENCED_BY": ("Cause", "KernelEvents", (("count", "INT64"), ("total_ns", "INT64"))),
    "RAN_IN": ("Operation", "Process", ()),
}

# Labels whose nodes belong to one operation (deleted and rewritten with it); the others are shared.
# KernelEvents first: they are found through their causes.
OPERATION_SCOPED = ("KernelEvents", "Cause")

#: From an operation to its root cause; runs unchanged on the embedded engine (ladybug) and on Neo4j.
#: Parameter: $op (the operation id). The root cause is the end of the longest path of on-chain edges.
ROOT_CAUSE_QUERY = """\
MATCH p = (o:Operation {id: $op})-[:DELAYED_BY|CAUSED_BY*1..8 {on_chain: true}]->(root:Cause)
RETURN root.id AS id, root.kind AS kind, root.culprit_pid AS pid, root.culprit_tid AS tid,
       root.culprit_comm AS comm, root.delay_ns AS delay_ns, root.summary AS summary, length(p) AS depth
ORDER BY depth DESC
LIMIT 1"""

NO_INT = -1    # absent integers (no culprit pid, no cpu): typed columns on the embedded engine take no nulls

_CULPRIT_REL = {"cpu_preemption": "PREEMPTED_BY", "lock_contention": "WOKEN_BY", "remote_service": "WOKEN_BY",
                "unknown": "WOKEN_BY"}
_SOCKET = re.compile(r"^\s*\[?([^\s\]]+?)\]?:(\d+)\s*->\s*\[?([^\s\]]+?)\]?:(\d+)\s*$")
_STALLS = re.compile(r"(\d+) reclaim stalls")


@dataclass(frozen=True)
class OperationRef:
    """What the analysed interval was: a span, a slow syscall, or a pid over a window (the default)."""

    id: str
    kind: str = "interval"
    name: str = ""


@dataclass(frozen=True)
class Node:
    label: str
    id: str
    props: dict[str, Any]


@dataclass(frozen=True)
class Edge:
    type: str
    src: str
    dst: str
    props: dict[str, Any]


@dataclass
class GraphDelta:
    """Everything one analysis contributes; ``op_id`` scopes the Cause/KernelEvents nodes it replaces."""

    op_id: str
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)

    def node_ids(self, label: str) -> list[str]:
        return [n.id for n in self.nodes if n.label == label]


def interval_op_id(host: str, pid: int, tid: int | None, start_ns: int, end_ns: int) -> str:
    """The id of "pid (thread tid) between start and end on host": the same window always maps here."""
    return f"op:{host}:{int(pid)}:{int(tid or 0)}:{int(start_ns)}-{int(end_ns)}"


def span_op_id(trace_id: str, span_id: str) -> str:
    return f"span:{trace_id.lower()}:{span_id.lower()}"


def process_id(host: str, pid: int) -> str:
    return f"proc:{host}:{int(pid)}"


def connection_id(host: str, saddr: str, sport: int, daddr: str, dport: int) -> str:
    """Both directions of a connection are one node: endpoints in sorted order."""
    a, b = sorted([(saddr, int(sport)), (daddr, int(dport))])
    return f"conn:{host}:{a[0]}:{a[1]}-{b[0]}:{b[1]}"


def _int(v: int | None) -> int:
    return NO_INT if v is None else int(v)


class _Builder:
    """Collects nodes (first writer wins per id) and edges (one per type, src, dst)."""

    def __init__(self, op_id: str, host: str):
        self.host = host
        self.delta = GraphDelta(op_id)
        self._nodes: dict[tuple[str, str], Node] = {}
        self._edges: dict[tuple[str, str, str], Edge] = {}

    def node(self, label: str, id_: str, **props: Any) -> str:
        key = (label, id_)
        if key not in self._nodes:
            self._nodes[key] = Node(label, id_, {"id": id_, **props})
        return id_

    def edge(self, type_: str, src: str, dst: str, **props: Any) -> None:
        key = (type_, src, dst)
        old = self._edges.get(key)
        if old is not None and "delay_ns" in props:   # same culprit reached twice from one cause: add up
            props = {**props, "delay_ns": old.props.get("delay_ns", 0) + props["delay_ns"]}
        self._edges[key] = Edge(type_, src, dst, props)

    def process(self, pid: int, comm: str | None) -> str:
        return self.node("Process", process_id(self.host, pid), host=self.host, pid=int(pid), comm=comm or "")

    def done(self) -> GraphDelta:
        self.delta.nodes = list(self._nodes.values())
        self.delta.edges = list(self._edges.values())
        return self.delta


def _evidence_groups(c: Cause) -> tuple[dict[str, list[int]], list[tuple[str, int, str, int]]]:
    """Kernel events behind a cause, aggregated per type ([count, total_ns]), and the sockets it waited on."""
    groups: dict[str, list[int]] = {}
    sockets: list[tuple[str, int, str, int]] = []

    def add(kind: str, count: int, total: int) -> None:
        g = groups.setdefault(kind, [0, 0])
        g[0] += int(count)
        g[1] += int(total)

    for e in c.evidence:
        if isinstance(e, str):
            if m := _STALLS.search(e):
                add("direct_reclaim", int(m.group(1)), c.delay_ns)
            continue
        if not isinstance(e, dict):
            continue
        if "preemptions" in e:
            add("sched_switch:preempted", e["preemptions"], e.get("runq_ns", 0))
        if "wakeup_latency_ns" in e:
            add("run_queue_wait", e.get("waits", 1), e["wakeup_latency_ns"])
        if "blocked_ns" in e:
            add(f"offcpu:{e.get('syscall') or 'untraced'}", 1, e["blocked_ns"])
        if "block_io" in e:
            add("block_io", e["block_io"], 0)
        if "retransmits" in e:
            add("tcp_retransmit", e["retransmits"], 0)
        for k in ("own_reclaim_stalls",):
            if k in e:
                add("direct_reclaim", e[k], e.get("own_reclaim_ns", 0))
        if "socket" in e and (m := _SOCKET.match(str(e["socket"]))):
            sockets.append((m.group(1), int(m.group(2)), m.group(3), int(m.group(4))))
    return groups, sockets


def _add_cause(b: _Builder, c: Cause, parent_id: str, parent_is_op: bool, path: str, rank: int, depth: int,
               chain_ids: set[int], root: Cause | None, parent_on_chain: bool) -> None:
    cu = c.culprit
    cid = f"{path}/{c.kind}:{_int(cu.pid)}:{_int(cu.tid)}"
    b.node("Cause", cid, op=b.delta.op_id, kind=c.kind, summary=c.summary, delay_ns=int(c.delay_ns),
           culprit_pid=_int(cu.pid), culprit_tid=_int(cu.tid), culprit_comm=cu.comm or "", cpu=_int(c.cpu),
           depth=depth, is_root=c is root)
    on_chain = parent_on_chain and id(c) in chain_ids
    b.edge("DELAYED_BY" if parent_is_op else "CAUSED_BY", parent_id, cid,
           delay_ns=int(c.delay_ns), rank=rank, on_chain=on_chain)
    if cu.pid is not None:
        rel = _CULPRIT_REL.get(c.kind, "BLAMES")
        extra = {"cpu": _int(c.cpu)} if rel == "PREEMPTED_BY" else {}
        b.edge(rel, cid, b.process(cu.pid, cu.comm), delay_ns=int(c.delay_ns), **extra)
    groups, sockets = _evidence_groups(c)
    for kind, (count, total) in sorted(groups.items()):
        kid = b.node("KernelEvents", f"{cid}#{kind}", op=b.delta.op_id, type=kind, count=count, total_ns=total,
                     detail="")
        b.edge("EVIDENCED_BY", cid, kid, count=count, total_ns=total)
    for saddr, sport, daddr, dport in sockets:
        conn = b.node("Connection", connection_id(b.host, saddr, sport, daddr, dport), host=b.host,
                      saddr=saddr, sport=sport, daddr=daddr, dport=dport)
        b.edge("WAITED_ON", cid, conn, delay_ns=int(c.delay_ns))
    for i, ch in enumerate(sorted(c.children, key=lambda x: x.delay_ns, reverse=True)):
        _add_cause(b, ch, cid, False, cid, i, depth + 1, chain_ids, root, on_chain)


def analysis_graph(a: Analysis, host: str, op: OperationRef | None = None) -> GraphDelta:
    """The graph of one analysis. ``op`` names the operation (default: the pid/window interval)."""
    iv, bd = a.interval, a.breakdown
    op = op or OperationRef(interval_op_id(host, iv.tgid, iv.tid, iv.start_ns, iv.end_ns), "interval",
                            a.operation or f"{a.comm} window")
    b = _Builder(op.id, host)
    rc = a.root_cause
    b.node("Operation", op.id, kind=op.kind, name=op.name, host=host, pid=int(iv.tgid), tid=int(bd.tid),
           comm=a.comm, start_ns=int(iv.start_ns), end_ns=int(iv.end_ns), wall_ns=int(bd.wall_ns),
           on_cpu_ns=int(bd.on_cpu_ns), runq_ns=int(bd.runq_ns), blocked_ns=int(bd.blocked_ns),
           root_kind=rc.kind if rc else "", root_delay_ns=int(rc.delay_ns) if rc else 0)
    b.edge("RAN_IN", op.id, b.process(iv.tgid, a.comm))
    chain_ids = {id(c) for c in a.chain}
    for i, c in enumerate(a.causes):
        _add_cause(b, c, op.id, True, op.id, i, 0, chain_ids, rc, True)
    return b.done()


__all__ = ["NODE_SCHEMA", "REL_SCHEMA", "ROOT_CAUSE_QUERY", "OPERATION_SCOPED", "OperationRef", "Node", "Edge",
           "GraphDelta", "analysis_graph", "interval_op_id", "span_op_id", "process_id", "connection_id"]
