"""`kprobe why --pid P --from T1 --to T2`: the causal analysis on the command line.

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


def _die(msg: str) -> int:
    print(f"kprobe: error: {msg}", file=sys.stderr)
    return 2


def add_parser(subparsers: argparse._SubParsersAction, default_data: Path | None = None) -> argparse.ArgumentParser:
    """Register `why` on the main CLI's subparsers."""
    data = default_data or Path(os.environ.get("KPROBE_DATA", "/var/lib/kprobe"))
    p = subparsers.add_parser(
        "why", help="root cause of a slow operation: pid over a time window",
        description="Explain why PID was slow between T1 and T2: wall-time breakdown (on CPU, run queue, "
                    "blocked) and the causal chain (preemption, memory pressure, disk, network, locks, "
                    "other services) down to the root cause.")
    p.add_argument("--data", type=Path, default=data, help="data directory (default: %(default)s)")
    p.add_argument("--pid", type=int, required=True, help="process id (tgid) of the slow operation")
    p.add_argument("--tid", type=int, default=None, help="thread id (default: the most delayed thread of PID)")
    p.add_argument("--from", dest="from_", required=True, metavar="T1", help="UTC ns since the epoch or ISO-8601")
    p.add_argument("--to", required=True, metavar="T2", help="UTC ns since the epoch or ISO-8601")
    p.add_argument("--json", action="store_true", help="machine-readable analysis")
    p.set_defaults(fn=cmd_why)
    return p


def cmd_why(args: argparse.Namespace) -> int:
    from kprobe.causal.why import NoDataError, render_text, why
    from kprobe.query.client import QueryError, open_store
    from kprobe.query.timefmt import parse_ts

    try:
        t1, t2 = parse_ts(args.from_), parse_ts(args.to)
    except ValueError as e:
        return _die(str(e))
    if t2 <= t1:
        return _die(f"--to must be after --from (got {args.from_} .. {args.to})")
    if args.pid <= 0:
        return _die(f"--pid must be a positive process id, got {args.pid}")
    try:
        store = open_store(args.data)
    except QueryError as e:
        return _die(str(e))
    try:
        analysis = why(store, args.pid, t1, t2, tid=args.tid)
    except NoDataError as e:
        return _die(str(e))
    except QueryError as e:
        return _die(f"query failed: {e}")
    finally:
        close = getattr(store, "close", None)
        if close:
            close()
    if args.json:
        json.dump(analysis.to_json(), sys.stdout)
        sys.stdout.write("\n")
    else:
        print(render_text(analysis))
    return 0
