"""`kprobe incidents`: slow or failed operations, newest first, each with an id for `kprobe why`."""

from __future__ import annotations

import argparse
import json
import sys

from kprobe.cli.common import add_data_arg, die, store_at
from kprobe.query.timefmt import format_ts

EPILOG = """\
examples:
  kprobe incidents                         failed spans, slow spans and slow kernel operations, newest first
  kprobe incidents --slow-ms 200 --json    a lower threshold, machine-readable
  kprobe why --incident span-3f2a9c0d1e2b4a55   explain one of them

Sources: spans with status ERROR or longer than --slow-ms; for every watched process (instrumented
or not) syscalls that do work (write, fsync, connect, send, ...) and run-queue waits longer than
--slow-ms. Idle waits (accept, recv, poll, futex, sleep) are not incidents.
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("incidents", help="slow or failed operations, newest first",
                       description="List slow or failed operations found in the recording, newest first.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arg(p)
    p.add_argument("--slow-ms", type=float, default=500.0, help="slowness threshold (default: %(default)s)")
    p.add_argument("--limit", type=int, default=50, help="at most this many (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="JSON array; each item has id, times, pid, what, error")
    p.set_defaults(fn=run)
    return p


def render(found: list) -> str:
    if not found:
        return "no incidents (no failed spans, nothing slower than the threshold)"
    lines = []
    for i in found:
        d = i.duration_ns
        dur = f"{d / 1e9:.2f} s" if d >= 1_000_000_000 else f"{d / 1e6:.0f} ms"
        err = f"  ERROR {i.error}" if i.error else ""
        lines.append(f"{format_ts(i.end_ns)}  {i.id}\n    {i.comm} PID {i.pid}: {i.what} {dur}{err}")
    lines.append("")
    lines.append("explain one: kprobe why --incident ID")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from kprobe.causal.incidents import incidents  # lazy: msgspec and the causal engine's evidence types
    from kprobe.query.client import QueryError

    if args.slow_ms <= 0 or args.limit <= 0:
        return die("--slow-ms and --limit must be positive")
    with store_at(args.data) as store:
        try:
            found = incidents(store, int(args.slow_ms * 1e6), args.limit)
        except QueryError as e:
            return die(str(e))
    if args.json:
        json.dump([i.to_json() for i in found], sys.stdout)
        sys.stdout.write("\n")
    else:
        print(render(found))
    return 0
