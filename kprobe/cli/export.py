"""`kprobe export --perfetto FILE`: the recording (or a pid, a trace, a window of it) for ui.perfetto.dev."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kprobe.cli.common import add_data_arg, die, store_at
from kprobe.query.timefmt import parse_ts

EPILOG = """\
examples:
  kprobe export --perfetto incident.pftrace --trace 478bcdd8304967fc5b85d4cb49cfd168
  kprobe export --perfetto svc.pftrace --pid 812 --from 2026-11-27T03:47:12Z --to 2026-11-27T03:47:13Z

Open the file at ui.perfetto.dev (Open trace file). One track per process and thread: off-CPU slices
(reason, preemptor, waker, run-queue time as args), syscalls, reclaim and block I/O, spans; wake-ups
(including socket replies) are flows from the waker to the woken thread.
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("export", help="write the recording as a Perfetto trace (ui.perfetto.dev)",
                       description="Export recorded events and spans to another tool's format.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arg(p)
    p.add_argument("--perfetto", type=Path, required=True, metavar="FILE", help="Perfetto trace (protobuf) to write")
    p.add_argument("--pid", type=int, nargs="+", metavar="PID", help="only these processes (default: all recorded)")
    p.add_argument("--trace", metavar="ID", help="a trace's processes over the trace's time (32 hex digits)")
    p.add_argument("--from", dest="from_", metavar="T1", help="UTC ns since the epoch or ISO-8601")
    p.add_argument("--to", metavar="T2", help="UTC ns since the epoch or ISO-8601")
    p.set_defaults(fn=run)
    return p


def run(args: argparse.Namespace) -> int:
    # lazy: the causal engine's span lookup (msgspec) and the store client are ~60 ms of `kprobe --help`
    from kprobe.causal.span_chain import SpanLookupError, hex_id
    from kprobe.export.perfetto import Selection, export
    from kprobe.query.client import QueryError

    try:
        sel = Selection(pids=list(args.pid or []),
                        trace_id=hex_id(args.trace, 32, "trace id") if args.trace else None,
                        from_ns=parse_ts(args.from_) if args.from_ else None,
                        to_ns=parse_ts(args.to) if args.to else None)
    except ValueError as e:
        return die(str(e))
    if sel.from_ns is not None and sel.to_ns is not None and sel.to_ns <= sel.from_ns:
        return die("--to must be after --from")
    with store_at(args.data) as store:
        try:
            counts = export(store, sel, args.perfetto)
        except SpanLookupError as e:
            return die(str(e))
        except (QueryError, OSError) as e:
            return die(f"export failed: {e}")
    slices = ", ".join(f"{n} {k}" for k, n in sorted(counts.slices.items())) or "no slices"
    print(f"kprobe: wrote {args.perfetto}: {counts.processes} processes, {counts.threads} threads, {slices}, "
          f"{counts.flows} wake-up flows; open it at ui.perfetto.dev", file=sys.stderr)
    return 0
