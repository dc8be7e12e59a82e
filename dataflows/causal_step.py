"""One step of the causality flow, engine-free: rows in, (analysis, graph, row) out per closed operation.

The bytewax operator (dataflows/causality.py) holds one ``CausalityState`` per
host and calls ``on_rows`` / ``on_end``; tests call them directly too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from kprobe.causal.analyze import analyze
from kprobe.causal.fetch import WindowRows
from kprobe.causal.graph import GraphDelta, OperationRef, analysis_graph
from kprobe.causal.model import Analysis, Interval
from kprobe.dataflows.evidence import evidence_from_window, window_rows
from kprobe.dataflows.windowing import HostWindow, Operation, WindowConfig


@dataclass(frozen=True)
class EventBatch:
    """What flows in: rows of one table from one host (a batch, never one event per item)."""

    host: str
    table: str
    rows: tuple[dict[str, Any], ...]


def event_batches(table: str, rows: list[dict[str, Any]], default_host: str) -> list[EventBatch]:
    """Split decoded rows of one table (e.g. an Arrow record batch from Kafka, ``rb.to_pylist()``) per host."""
    by_host: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_host.setdefault(str(r.get("host") or default_host), []).append(r)
    return [EventBatch(h, table, tuple(rs)) for h, rs in sorted(by_host.items())]


@dataclass
class CausalResult:
    """What flows out for one analysed operation; ``analysis`` None means nothing was recorded for it."""

    op: Operation
    analysis: Analysis | None
    delta: GraphDelta | None
    row: dict[str, Any] | None


def analysis_row(op: Operation, a: Analysis) -> dict[str, Any]:
    """The row for the store's causal_analysis table; ``digest`` makes re-inserts detectable (idempotent)."""
    js = a.to_json()
    body = json.dumps(js, sort_keys=True, separators=(",", ":"))
    rc = a.root_cause
    return {
        "ts": op.end_ns, "host": op.host, "op_id": op.op_id, "op_kind": op.kind, "op_name": op.name,
        "pid": op.pid, "tid": a.breakdown.tid, "start_ns": op.start_ns, "end_ns": op.end_ns,
        "wall_ns": a.breakdown.wall_ns, "on_cpu_ns": a.breakdown.on_cpu_ns, "runq_ns": a.breakdown.runq_ns,
        "blocked_ns": a.breakdown.blocked_ns,
        "root_kind": rc.kind if rc else "", "root_pid": rc.culprit.pid or 0 if rc else 0,
        "root_comm": (rc.culprit.comm or "") if rc else "", "root_delay_ns": rc.delay_ns if rc else 0,
        "chain": " <- ".join(f"{c.kind}:{c.culprit.pid or 0}" for c in a.chain),
        "analysis": body, "digest": hashlib.sha256(body.encode()).hexdigest()[:32],
    }


def analyse_operation(w: HostWindow, op: Operation, rows: WindowRows | None = None) -> CausalResult:
    """``rows``: the window's rows already typed, shared by the operations fired together."""
    iv = Interval(op.pid, op.start_ns, op.end_ns, op.tid)
    ev = evidence_from_window(w, iv, rows=rows)
    if not ev.has_data():
        return CausalResult(op, None, None, None)
    a = analyze(ev)
    delta = analysis_graph(a, op.host, OperationRef(op.op_id, op.kind, op.name))
    return CausalResult(op, a, delta, analysis_row(op, a))


@dataclass
class CausalityState:
    """Per-host state of the flow: the window and the count of analyses without data."""

    window: HostWindow
    no_data: int = 0
    emitted: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    @classmethod
    def new(cls, host: str, config: WindowConfig) -> CausalityState:
        return cls(HostWindow(host, config))

    def _run(self, final: bool, upto: int | None = None) -> list[CausalResult]:
        out = []
        due = self.window.ready(final=final, upto=upto)
        rows = window_rows(self.window) if due else None
        for op in due:
            r = analyse_operation(self.window, op, rows)
            if r.analysis is None:
                self.no_data += 1
            else:
                self.emitted += 1
            out.append(r)
        self.window.evict()
        return out

    def on_rows(self, batch: EventBatch) -> list[CausalResult]:
        self.window.add_rows(batch.table, batch.rows)
        return self._run(final=False)

    def on_operation(self, op: Operation) -> list[CausalResult]:
        self.window.add_operation(op)
        return self._run(final=False)

    def on_idle(self) -> list[CausalResult]:
        """Input went quiet: analyse what ends before the newest event seen, without waiting for lateness."""
        return self._run(final=False, upto=self.window.max_event_ns)

    def on_end(self) -> list[CausalResult]:
        return self._run(final=True)
