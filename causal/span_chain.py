"""From an OpenTelemetry span (or a trace) to the kernel interval it ran in, and its causal chain.

A span joins the kernel events on host + ``process.pid`` (resource attribute) + ``thread.id``
(span attribute, when the SDK set it) + [start, end]. The span only names the operation; the
explanation is the same engine-free ``why`` used for a pid over a window, so an instrumented and an
uninstrumented service are explained the same way. The span becomes the head of the chain
("payment-handler span POST /pay 1.62 s ERROR ← …").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from kprobe.causal.model import Analysis
from kprobe.causal.records import Store
from kprobe.causal.why import phrase, render_text, why
from kprobe.schemas.store_tables import STATUS_ERROR

_HEX = re.compile(r"^[0-9a-f]+$")
SPAN_COLS = ("span_id, trace_id, parent_span_id, name, service, host, pid, tid, ts_ns, end_ns, "
             "status_code, status_message")


class SpanLookupError(LookupError):
    """No such span/trace, or the span cannot be joined to kernel events (no process.pid)."""


@dataclass(frozen=True)
class SpanRef:
    span_id: str
    trace_id: str
    parent_span_id: str
    name: str
    service: str
    host: str
    pid: int
    tid: int
    start_ns: int
    end_ns: int
    status_code: int
    status_message: str

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)

    @property
    def error(self) -> bool:
        return self.status_code == STATUS_ERROR

    @classmethod
    def from_row(cls, r: dict[str, Any]) -> SpanRef:
        return cls(str(r["span_id"]), str(r["trace_id"]), str(r["parent_span_id"]), str(r["name"]),
                   str(r["service"]), str(r["host"]), int(r["pid"]), int(r["tid"]), int(r["ts_ns"]),
                   int(r["end_ns"]), int(r["status_code"]), str(r["status_message"]))

    def to_json(self) -> dict[str, Any]:
        return {"kind": "span", "span_id": self.span_id, "trace_id": self.trace_id, "name": self.name,
                "service": self.service, "host": self.host, "pid": self.pid, "tid": self.tid or None,
                "start_ns": self.start_ns, "end_ns": self.end_ns, "duration_ns": self.duration_ns,
                "status": "ERROR" if self.error else ("OK" if self.status_code == 1 else "UNSET"),
                "status_message": self.status_message}

    def head(self) -> str:
        who = self.service or f"PID {self.pid}"
        d = self.duration_ns
        dur = f"{d / 1e9:.2f} s" if d >= 1_000_000_000 else f"{d / 1e6:.0f} ms"
        return f"{who} span {self.name} {dur}" + (" ERROR" if self.error else "")


def hex_id(value: str, length: int, what: str) -> str:
    v = value.strip().lower()
    if len(v) != length or not _HEX.match(v):
        raise ValueError(f"{what} must be {length} hex digits, got {value!r}")
    return v


def find_span(store: Store, span_id: str) -> SpanRef:
    sid = hex_id(span_id, 16, "span id")
    rows = store.query_rows(f"SELECT {SPAN_COLS} FROM spans WHERE span_id = '{sid}' LIMIT 1")
    if not rows:
        raise SpanLookupError(f"no span {sid} stored (was the exporter pointed at `kprobe record`'s OTLP port?)")
    return SpanRef.from_row(rows[0])


def trace_spans(store: Store, trace_id: str) -> list[SpanRef]:
    tid = hex_id(trace_id, 32, "trace id")
    rows = store.query_rows(f"SELECT {SPAN_COLS} FROM spans WHERE trace_id = '{tid}' ORDER BY ts_ns LIMIT 10000")
    if not rows:
        raise SpanLookupError(f"no spans stored for trace {tid}")
    return [SpanRef.from_row(r) for r in rows]


def pick_span(spans: list[SpanRef]) -> SpanRef:
    """The span of a trace worth explaining: a failed one if any, else the longest; joinable ones first."""
    return max(spans, key=lambda s: (s.pid > 0, s.error, s.duration_ns))


@dataclass
class SpanAnalysis:
    span: SpanRef
    analysis: Analysis

    def to_json(self) -> dict[str, Any]:
        d = self.analysis.to_json()
        d["span"] = self.span.to_json()
        d["chain"] = [self.span.to_json()] + d["chain"]
        return d

    def render(self) -> str:
        a = self.analysis
        links = [self.span.head()] + [phrase(c) for c in a.chain]
        first = " ← ".join(links) + ("  [ROOT CAUSE]" if a.chain else ": no kernel delay found")
        rest = render_text(a).split("\n", 1)
        ids = f"span {self.span.span_id} trace {self.span.trace_id} PID {self.span.pid}" + (
            f" TID {self.span.tid}" if self.span.tid else "")
        return "\n".join([first, ids] + rest[1:])


def _check_host(store: Store, span: SpanRef) -> None:
    """The span's host.name must be a host this store recorded (when the span names one): pids are per host."""
    if not span.host:
        return
    hosts = {str(r["host"]) for r in store.query_rows("SELECT DISTINCT host FROM processes LIMIT 100")}
    if hosts and span.host not in hosts:
        raise SpanLookupError(f"span {span.span_id} comes from host {span.host!r} but this recording holds kernel "
                              f"events of {', '.join(sorted(hosts))}: ask the recorder on {span.host}")


def why_span(store: Store, span: SpanRef) -> SpanAnalysis:
    """The kernel explanation of one span (its process, its thread if known, its time window)."""
    if span.pid <= 0:
        raise SpanLookupError(f"span {span.span_id} ({span.name}) has no process.pid resource attribute, so it "
                              "cannot be joined to kernel events; add it to the SDK resource")
    if span.end_ns <= span.start_ns:
        raise SpanLookupError(f"span {span.span_id} has no duration (end <= start)")
    _check_host(store, span)
    a = why(store, span.pid, span.start_ns, span.end_ns, tid=span.tid or None)
    return SpanAnalysis(span, a)
