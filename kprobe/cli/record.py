"""`kprobe record`: attach the probes and record until --duration or Ctrl-C (embedded store or Kafka)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time

from kprobe.cli import serve
from kprobe.cli.kafka_options import add_kafka_args, start_kafka_session
from kprobe.cli.recording import (
    CAPTURE_POLICY,
    add_capture_args,
    drop_privileges,
    preflight,
    recorder_config,
    start_captures,
    start_session,
    stop_all,
)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("record", help="record kernel events into the flight recorder",
                       description="Attach the probes and record until --duration or Ctrl-C. Needs root.",
                       epilog=CAPTURE_POLICY, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_capture_args(p, "bounded")
    p.add_argument("--duration", type=float, default=None, help="seconds to record (default: until Ctrl-C)")
    p.add_argument("--watch-comm", nargs="+", metavar="NAME", help="record high-volume streams only for these process names")
    p.add_argument("--watch-pid", nargs="+", type=int, metavar="PID", help="... and/or these pids (and their children)")
    add_kafka_args(p)
    serve.add_record_args(p)
    p.set_defaults(fn=run)
    return p


def wait_for_stop(stop: threading.Event, duration: float | None) -> None:
    """Wait for SIGINT/SIGTERM (or the duration) in short steps.

    The kernel hands a process signal to any thread that does not block it (chDB's and
    gRPC's threads included); Python runs the handler only when the main thread next
    executes bytecode, which an untimed wait never does: Ctrl-C would go unanswered.
    """
    deadline = time.monotonic() + duration if duration else None
    while not stop.wait(0.5):
        if deadline is not None and time.monotonic() >= deadline:
            return


def run(args: argparse.Namespace) -> int:
    preflight(args.data, getattr(args, "replayable", False))
    os.umask(0o077)  # the store, replay logs, spool and status files: owner only (SECURITY.md)
    watching = bool(args.watch_pid or args.watch_comm)
    if args.watch_comm:
        from kprobe.agent.proc_scan import pids_by_comm

        args.watch_pid = list(args.watch_pid or []) + pids_by_comm(args.watch_comm)
    # handlers first: a Ctrl-C during start-up (chDB, gRPC, probes) ends the recording once it has
    # started instead of landing in a library that swallows KeyboardInterrupt
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    # --replayable and --decode-payloads attach uprobes after the start, which needs root's capabilities
    later_attach = getattr(args, "replayable", False) or getattr(args, "decode_payloads", False)
    drop = None if args.keep_privileges or later_attach else drop_privileges
    session = start_kafka_session(args, recorder_config(args, watching), drop) if args.kafka else (
        start_session(args, watching, drop))
    captures = start_captures(args, session)
    api = serve.start_with_recorder(args, session)
    what = "system-wide" if not watching else f"watching pids {args.watch_pid} comms {args.watch_comm}"
    if args.netns or args.cgroup:
        what = f"the processes of {' and '.join(str(p) for p in (args.netns, args.cgroup) if p)}"
    print(f"kprobe: recording {what} into {args.data}" + (f" for {args.duration} s" if args.duration else
          " until Ctrl-C"), file=sys.stderr)
    wait_for_stop(stop, args.duration)
    if api:
        api.stop()
    stop_all(captures, session)
    return 0
