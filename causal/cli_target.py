"""The operation a command explains, as the command line names it: shared by `kprobe why` and `kprobe graph`.

One place for the options (--span / --trace / --incident / --pid with --tid --from --to),
their validation and messages, and for turning them into an analysis, so both commands
accept the same targets and say the same thing about a bad one.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from kprobe.causal.fetch import Store
from kprobe.causal.model import Analysis
from kprobe.causal.spans import SpanAnalysis, SpanRef, find_span, hex_id, pick_span, trace_spans, why_span
from kprobe.causal.why import why


@dataclass(frozen=True)
class Target:
    """A span, a trace (its failed, else longest, span) or a pid (and thread) over a window."""

    span_id: str | None = None
    trace_id: str | None = None
    pid: int | None = None
    tid: int | None = None
    from_ns: int | None = None
    to_ns: int | None = None


def add_target_args(p: argparse.ArgumentParser) -> None:
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--span", metavar="ID", help="span id (16 hex digits) received by the OTLP receiver")
    what.add_argument("--trace", metavar="ID", help="trace id (32 hex digits): explains its failed/longest span")
    what.add_argument("--incident", metavar="ID", help="incident id from `kprobe incidents`")
    what.add_argument("--pid", type=int, help="process id (tgid) of the slow operation; needs --from and --to")
    p.add_argument("--tid", type=int, default=None, help="with --pid: thread id (default: the most delayed thread)")
    p.add_argument("--from", dest="from_", metavar="T1", help="with --pid: UTC ns since the epoch or ISO-8601")
    p.add_argument("--to", metavar="T2", help="with --pid: UTC ns since the epoch or ISO-8601")


def parse_target(args: argparse.Namespace) -> Target:
    """The target the options name; ValueError says what is wrong with them."""
    from kprobe.causal.incidents import parse_incident_id
    from kprobe.query.timefmt import parse_ts

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
    if args.pid <= 0:
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
