"""`kprobe why (--span ID | --trace ID | --incident ID | --pid P --from T1 --to T2)` on the command line.

Kept out of kprobe/cli.py so the analysis owns its arguments and messages; the
main CLI only calls ``add_parser(sub)``. Exit codes follow the main CLI: 0 ok,
2 bad arguments or no data (with a message saying what to do).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

EPILOG = """\
examples:
  kprobe why --span 3f2a9c0d1e2b4a55                  a span (its process, thread and time window)
  kprobe why --trace 4bf92f3577b34da6a3ce929d0e0e4736  the failed (else the longest) span of a trace
  kprobe why --incident span-3f2a9c0d1e2b4a55          an id printed by `kprobe incidents`
  kprobe why --pid 812 --from 2026-11-27T03:47:12Z --to 2026-11-27T03:47:13Z
                                                      an uninstrumented process over a window
  kprobe why --span 3f2a9c0d1e2b4a55 --json            {"root_cause": {"kind", "culprit": {"pid", "comm"},
                                                        "delay_ns", "evidence"}, "breakdown", "chain", ...}

The chain is printed newest effect first; the last link is the root cause. Kinds: cpu_preemption,
memory_pressure, disk_io, network, lock_contention, remote_service (plus sleep/unknown).
"""


def _die(msg: str) -> int:
    print(f"kprobe: error: {msg}", file=sys.stderr)
    return 2


def add_parser(subparsers: argparse._SubParsersAction, default_data: Path | None = None) -> argparse.ArgumentParser:
    """Register `why` on the main CLI's subparsers."""
    data = default_data or Path(os.environ.get("KPROBE_DATA", "/var/lib/kprobe"))
    p = subparsers.add_parser(
        "why", help="root cause of a slow or failed operation: a span, a trace, an incident or pid+window",
        description="Explain why an operation was slow: wall-time breakdown (on CPU, run queue, blocked) and "
                    "the causal chain (preemption, memory pressure, disk, network, locks, other services) "
                    "down to the root cause.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=data, help="data directory (default: %(default)s)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--span", metavar="ID", help="span id (16 hex digits) received by the OTLP receiver")
    what.add_argument("--trace", metavar="ID", help="trace id (32 hex digits): explains its failed/longest span")
    what.add_argument("--incident", metavar="ID", help="incident id from `kprobe incidents`")
    what.add_argument("--pid", type=int, help="process id (tgid) of the slow operation; needs --from and --to")
    p.add_argument("--tid", type=int, default=None, help="with --pid: thread id (default: the most delayed thread)")
    p.add_argument("--from", dest="from_", metavar="T1", help="with --pid: UTC ns since the epoch or ISO-8601")
    p.add_argument("--to", metavar="T2", help="with --pid: UTC ns since the epoch or ISO-8601")
    p.add_argument("--json", action="store_true", help="machine-readable analysis")
    p.set_defaults(fn=cmd_why)
    return p


def cmd_why(args: argparse.Namespace) -> int:
    from kprobe.causal.incidents import parse_incident_id
    from kprobe.causal.spans import SpanLookupError, find_span, pick_span, trace_spans, why_span
    from kprobe.causal.why import NoDataError, render_text, why
    from kprobe.query.client import QueryError, open_store
    from kprobe.query.timefmt import parse_ts

    pid, tid, t1, t2 = args.pid, args.tid, None, None
    span_id = args.span
    try:
        if args.incident:
            kind, val = parse_incident_id(args.incident)
            if kind == "span":
                span_id = val
            else:
                pid, tid, t1, t2 = val
        elif pid is not None:
            if not (args.from_ and args.to):
                return _die("--pid needs --from T1 and --to T2")
            t1, t2 = parse_ts(args.from_), parse_ts(args.to)
            if t2 <= t1:
                return _die(f"--to must be after --from (got {args.from_} .. {args.to})")
            if pid <= 0:
                return _die(f"--pid must be a positive process id, got {pid}")
    except ValueError as e:
        return _die(str(e))
    try:
        store = open_store(args.data)
    except QueryError as e:
        return _die(str(e))
    try:
        if span_id or args.trace:
            span = find_span(store, span_id) if span_id else pick_span(trace_spans(store, args.trace))
            result = why_span(store, span)
            out, text = result.to_json(), result.render
        else:
            analysis = why(store, pid, t1, t2, tid=tid)
            out, text = analysis.to_json(), lambda: render_text(analysis)
    except (NoDataError, SpanLookupError, ValueError) as e:
        return _die(str(e))
    except QueryError as e:
        return _die(f"query failed: {e}")
    finally:
        close = getattr(store, "close", None)
        if close:
            close()
    if args.json:
        json.dump(out, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(text())
    return 0
