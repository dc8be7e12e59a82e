"""`kprobe incidents`: the slow or failed operations that matter most first, each with its root cause and an id
for `kprobe why`."""

from __future__ import annotations

import argparse
import json
import sys

from kprobe.cli.common import add_data_arg, die, store_at
from kprobe.query.timefmt import format_ts

EPILOG = """\
examples:
  kprobe incidents                         the incidents that matter most first, the top 5 with their root cause
  kprobe incidents --analyse 10 --json     explain more of them, machine-readable
  kprobe incidents --newest                every incident, newest first (no ranking, no analysis)
  kprobe why --incident span-3f2a9c0d1e2b4a55   explain one of them

Sources: spans with status ERROR or longer than --slow-ms; for every watched process (instrumented
or not) syscalls that do work (write, fsync, connect, send, ...), run-queue waits and
uninterruptible waits longer than --slow-ms. Idle waits (accept, recv, poll, futex, sleep) and kernel
threads waiting for work are not incidents.

Ranking (the newest 200 incidents): failed spans, slow spans, then kernel incidents of processes
that serve requests (socket I/O), then the rest; within each, how far the operation stood out
against the same operation of the same process (duration / its median in the recording). Repeats
of one operation are grouped, the top --analyse are explained (one `kprobe why` each), and those
with the same root cause (kind and culprit) are grouped under the first.
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("incidents", help="slow or failed operations, the ones that matter most first",
                       description="List slow or failed operations found in the recording, ranked by impact, "
                                   "with the root cause of the top ones.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arg(p)
    p.add_argument("--slow-ms", type=float, default=500.0, help="slowness threshold (default: %(default)s)")
    p.add_argument("--limit", type=int, default=20, help="at most this many (default: %(default)s)")
    p.add_argument("--analyse", type=int, default=5,
                   help="explain the top N (one `why` each; 0: none; default: %(default)s)")
    p.add_argument("--newest", action="store_true", help="every incident newest first, unranked (the API's order)")
    p.add_argument("--json", action="store_true", help="JSON array; each item has id, times, pid, what, error "
                                                       "(ranked: also tier, outlier, repeats, root_cause)")
    p.set_defaults(fn=run)
    return p


def _dur(d: int) -> str:
    return f"{d / 1e9:.2f} s" if d >= 1_000_000_000 else f"{d / 1e6:.0f} ms"


def render(found: list) -> str:
    if not found:
        return "no incidents (no failed spans, nothing slower than the threshold)"
    lines = []
    for i in found:
        err = f"  ERROR {i.error}" if i.error else ""
        lines.append(f"{format_ts(i.end_ns)}  {i.id}\n    {i.comm} PID {i.pid}: {i.what} {_dur(i.duration_ns)}{err}")
    lines.append("")
    lines.append("explain one: kprobe why --incident ID")
    return "\n".join(lines)


def render_ranked(rk) -> str:
    if not rk.items:
        return "no incidents (no failed spans, nothing slower than the threshold)"
    lines = []
    for n, r in enumerate(rk.items, 1):
        i = r.incident
        err = f"  ERROR {i.error}" if i.error else ""
        base = f", {r.outlier:.1f}x its usual {_dur(r.baseline_ns)}" if r.baseline_ns else ""
        rep = f"  (+{len(r.repeats)} like it)" if r.repeats else ""
        lines.append(f"{n:>2}. {format_ts(i.end_ns)}  {i.id}{rep}\n"
                     f"    {i.comm} PID {i.pid}: {i.what} {_dur(i.duration_ns)}{err}  [{r.to_json()['tier']}{base}]")
        if r.root_cause:
            rc = r.root_cause
            lines.append(f"    root cause: {rc['kind']}, {rc['culprit_label']}: {rc['summary']}")
        elif r.analysis_error:
            lines.append(f"    root cause: not found ({r.analysis_error})")
        elif r.analysed:
            lines.append("    root cause: no delay found in the recording")
    lines.append("")
    lines.append(f"ranked {rk.candidates} incidents; root causes of the top {rk.analysed} "
                 "(more: --analyse N, or kprobe why --incident ID)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from kprobe.causal.impact import ranked_incidents  # lazy: msgspec and the causal engine
    from kprobe.causal.incidents import incidents
    from kprobe.query.client import QueryError

    if args.slow_ms <= 0 or args.limit <= 0 or args.analyse < 0:
        return die("--slow-ms and --limit must be positive, --analyse not negative")
    with store_at(args.data) as store:
        try:
            if args.newest:
                found = incidents(store, int(args.slow_ms * 1e6), args.limit)
            else:
                rk = ranked_incidents(store, int(args.slow_ms * 1e6), args.limit, args.analyse)
        except QueryError as e:
            return die(str(e))
    if args.json:
        json.dump([i.to_json() for i in (found if args.newest else rk.items)], sys.stdout)
        sys.stdout.write("\n")
    else:
        print(render(found) if args.newest else render_ranked(rk))
    return 0
