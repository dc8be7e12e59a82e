"""kprobe command line: record kernel events, run a command under recording, query what was recorded.

One module per subcommand in this package, each with ``add_parser(sub)`` (its options, help text,
and the function that runs it); :data:`COMMANDS` lists them in the order `kprobe --help` shows
them. What several share is in ``common`` (the error exit, the data directory, the store),
``recording`` (record and run), ``target`` (why and graph) and the ``*_options`` modules.

Imports at the top of these modules stay light (argparse, stdlib, small kprobe modules): the
parser of every command is built at each start, so `kprobe --help` costs what they import. The
recorder, numpy, chDB and the analysis are imported inside the function that runs a command.

Exit codes: 0 ok, 1 runtime failure, 2 bad arguments or environment (with a message saying what to do).
"""

from __future__ import annotations

import argparse
import os
import sys

from kprobe.cli import (
    dataflow,
    demo,
    events,
    export,
    graph,
    hosts,
    incidents,
    latency,
    record,
    replay,
    run,
    serve,
    sql,
    stats,
    timeline,
    why,
)
from kprobe.cli.common import Failed, die

COMMANDS = (record, run, events, stats, sql, why, timeline, latency, incidents, demo, graph, dataflow, replay,
            serve, export, hosts)

EPILOG = """\
examples:
  sudo kprobe record --duration 60                     record everything for a minute
  sudo kprobe record --watch-comm settlement-svc       follow one service (and what it spawns)
  sudo kprobe run -- ./payment-batch --date today      record a command for its lifetime
  kprobe events --pid 4721 --type offcpu --json        what happened to PID 4721
  kprobe stats                                         counts, drops, attach status, clock
  kprobe why --pid 812 --from 2026-11-27T03:47:12Z --to 2026-11-27T03:47:13Z
                                                       root cause of a slow second, down to the kernel
  kprobe sql "SELECT comm, sum(dur_ns) FROM offcpu GROUP BY comm ORDER BY 2 DESC LIMIT 5"

The data directory defaults to $KPROBE_DATA or /var/lib/kprobe. While a recorder
runs, other commands query it through its socket in that directory.
"""


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="kprobe",
        description="Kernel-level visibility for financial systems: eBPF capture with zero changes to services.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    # Before anything imports numpy or pyarrow: their BLAS pool and allocator thread would start
    # before `record` drops its capabilities, which are per thread (kprobe needs neither thread).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("JE_ARROW_MALLOC_CONF", "background_thread:false")
    ap = build_parser()
    args = ap.parse_args(argv)
    if getattr(args, "command", None) and args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not getattr(args, "fn", None):
        ap.print_help()
        return 2
    try:
        return args.fn(args)
    except Failed as e:
        return die(str(e), e.code)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `kprobe events | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
