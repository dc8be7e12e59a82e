"""The operation to explain, and its analysis: shared by `kprobe why`, `kprobe graph` and the API.

A target is named by text (a span id, a trace id, an incident id, or a pid with a window), as a
user types it on the command line or in a query string; :func:`parse_target` checks it with the
same rules and words for every caller, and :func:`explain` runs the analysis. No argparse here:
the options that fill a :class:`TargetText` live with the commands (kprobe/cli/target.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from kprobe.causal.incidents import parse_incident_id
from kprobe.causal.model import Analysis
from kprobe.causal.records import Store
from kprobe.causal.span_chain import (
    SpanAnalysis,
    SpanRef,
    find_span,
    hex_id,
    pick_span,
    trace_spans,
    why_span,
)
from kprobe.causal.why import why
from kprobe.query.timefmt import parse_ts


@dataclass(frozen=True)
class Target:
    """A span, a trace (its failed, else longest, span) or a pid (and thread) over a window."""

    span_id: str | None = None
    trace_id: str | None = None
    pid: int | None = None
    tid: int | None = None
    from_ns: int | None = None
    to_ns: int | None = None


class TargetText(Protocol):
    """A target as typed: the CLI's options (an argparse namespace) or the API's query parameters."""

    span: str | None
    trace: str | None
    incident: str | None
    pid: int | None
    tid: int | None
    from_: str | None
    to: str | None


def parse_target(args: TargetText) -> Target:
    """The target the text names; ValueError says what is wrong with it."""
    if args.incident:
        kind, val = parse_incident_id(args.incident)
        if kind == "span":
            return Target(span_id=val)
        pid, tid, t1, t2 = val
        return Target(pid=pid, tid=tid, from_ns=t1, to_ns=t2)
    if args.span or args.trace:
        if args.from_ or args.to or args.tid is not None:
            raise ValueError("--tid/--from/--to go with --pid, not with --span or --trace")
        return Target(span_id=hex_id(args.span, 16, "span id") if args.span else None,
                      trace_id=hex_id(args.trace, 32, "trace id") if args.trace else None)
    if not (args.from_ and args.to):
        raise ValueError("--pid needs --from T1 and --to T2")
    if args.pid is None or args.pid <= 0:
        raise ValueError(f"--pid must be a positive process id, got {args.pid}")
    t1, t2 = parse_ts(args.from_), parse_ts(args.to)
    if t2 <= t1:
        raise ValueError(f"--to must be after --from (got {args.from_} .. {args.to})")
    return Target(pid=args.pid, tid=args.tid, from_ns=t1, to_ns=t2)


def find_target_span(store: Store, t: Target) -> SpanRef | None:
    if t.span_id:
        return find_span(store, t.span_id)
    if t.trace_id:
        return pick_span(trace_spans(store, t.trace_id))
    return None


def explain(store: Store, t: Target) -> tuple[Analysis, SpanAnalysis | None]:
    """The analysis of the target (and, for a span or trace, the span-headed one)."""
    span = find_target_span(store, t)
    if span is not None:
        sa = why_span(store, span)
        return sa.analysis, sa
    assert t.pid is not None and t.from_ns is not None and t.to_ns is not None
    return why(store, t.pid, t.from_ns, t.to_ns, tid=t.tid), None
