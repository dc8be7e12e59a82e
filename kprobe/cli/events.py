"""`kprobe events`: the recorded events of a pid, types and window, as text or JSON."""

from __future__ import annotations

import argparse
import json
import sys

from kprobe.cli.common import add_data_arg, die, store_at
from kprobe.query.timefmt import parse_ts


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("events", help="list recorded events")
    add_data_arg(p)
    p.add_argument("--pid", type=int, help="process or thread id")
    p.add_argument("--type", nargs="+", metavar="T", help="event types: offcpu proc fault reclaim oom tcp_state sock_io "
                   "tcp_retrans syscall fd_open block_io")
    p.add_argument("--from", dest="from_", metavar="T1", help="UTC ns since the epoch or ISO-8601")
    p.add_argument("--to", metavar="T2", help="UTC ns since the epoch or ISO-8601")
    p.add_argument("--limit", type=int, default=10000)
    p.add_argument("--json", action="store_true", help="JSON array of events with all fields (UTC ns timestamps)")
    p.set_defaults(fn=run)
    return p


def run(args: argparse.Namespace) -> int:
    from kprobe.query.events import EventQuery, fetch, format_row  # lazy: numpy, via the table definitions

    try:
        q = EventQuery(
            pid=args.pid,
            types=args.type,
            from_ns=parse_ts(args.from_) if args.from_ else None,
            to_ns=parse_ts(args.to) if args.to else None,
            limit=args.limit,
        )
        q.tables()
    except ValueError as e:
        return die(str(e))
    with store_at(args.data) as store:
        rows = fetch(store, q)
    if args.json:
        json.dump(rows, sys.stdout)
        sys.stdout.write("\n")
    else:
        for r in rows:
            print(format_row(r))
        if not rows:
            print("no events match", file=sys.stderr)
    return 0
