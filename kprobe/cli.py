"""kprobe command line: record kernel events, run a command under recording, query what was recorded.

Exit codes: 0 ok, 1 runtime failure, 2 bad arguments or environment (with a message saying what to do).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from kprobe.agent.kafka_cli import add_kafka_args, start_kafka_session
from kprobe.cli_dataflow import add_parser as add_dataflow_parser

DEFAULT_DATA = Path(os.environ.get("KPROBE_DATA", "/var/lib/kprobe"))

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


CAPTURE_POLICY = """\
capture policy (--detail):
  bounded  (default for `record`) is built to stay on: no program runs on every syscall
           or every socket send/recv of the host. Off-CPU intervals >= --min-offcpu-us
           (1000 system-wide, 50 for watched processes) are rows carrying the syscall the
           thread blocked in (read from its saved registers at switch-out) and, for socket
           calls, the socket's 4-tuple; shorter ones are summed into the thread's next row
           (short_n, short_ns). fsync,
           fdatasync, sync_file_range, connect, accept, openat and close have their own
           tracepoints: connect, accept, openat and close are always rows, syncs when
           >= --min-syscall-us (1000 system-wide; shorter ones counted with their time).
           TCP connections carry their byte totals on
           every state change (tcp_state bytes_sent/bytes_received). Page faults are
           sampled 1 in --fault-sample (64) with exact counts. Block requests faster
           than --min-block-us (1000, issue to completion) are summed in the kernel per
           submitter, device and operation each second (block_io rows with requests > 1,
           bytes and busy time exact); slower or failed ones are a row each.
           With a watch list (--watch-comm/--watch-pid) the watched processes also get
           syscall rows >= --min-syscall-us (100) and socket I/O summed per socket every
           --sock-flush-ms (100): that runs a program on every syscall and send/recv.
  full     (default for `run`) every traced syscall, every send/recv and every block
           request is a row; off-CPU intervals still use --min-offcpu-us.
What is below a threshold is counted (kprobe stats: *_below_threshold, sock_io_folded,
block_requests_summed),
never lost silently; `kprobe stats` shows the policy in effect and the recorder's own
CPU, rows/s and memory.
"""

# Off-CPU rows: a whole host's waits of a millisecond or more (what an incident is made of; the
# shorter ones are summed into each thread's next row), every 50 us wait of a watched process.
SYSTEM_WIDE_MIN_OFFCPU_US = 1000.0
WATCHED_MIN_OFFCPU_US = 50.0

DETAIL_DEFAULTS = {  # detail -> (min syscall us, sock flush ms)
    "bounded": (100.0, 100),
    "full": (0.0, 0),
}
# Block requests: a row each from this long (a disk that makes anyone wait); faster ones are summed.
BOUNDED_MIN_BLOCK_US = 1000


def _add_capture_args(p: argparse.ArgumentParser, detail: str) -> None:
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="data directory (default: %(default)s)")
    p.add_argument("--detail", choices=sorted(DETAIL_DEFAULTS), default=detail,
                   help="capture policy, see below (default: %(default)s)")
    p.add_argument("--min-offcpu-us", type=float, default=None,
                   help="off-CPU intervals shorter than this are summed into the thread's next row, not recorded "
                        f"(default: {SYSTEM_WIDE_MIN_OFFCPU_US:g} system-wide with --detail bounded, "
                        f"{WATCHED_MIN_OFFCPU_US:g} with a watch list or --detail full)")
    p.add_argument("--min-syscall-us", type=float, default=None,
                   help="syscalls shorter than this are only counted (default: 1000 for syncs system-wide with "
                        "--detail bounded, 100 for a watch list's calls, 0 with full)")
    p.add_argument("--sock-flush-ms", type=int, default=None,
                   help="0: one sock_io row per send/recv; N: per socket and direction at most one row per N ms "
                        "carrying the bytes since the previous row (default: 100 bounded, 0 full)")
    p.add_argument("--min-block-us", type=int, default=None,
                   help="block requests faster than this (issue to completion) are summed per submitter, device "
                        "and operation each second instead of a row each; failed ones are always rows "
                        f"(default: {BOUNDED_MIN_BLOCK_US} with --detail bounded, 0 = every request with full)")
    p.add_argument("--fault-sample", type=int, default=64, metavar="N",
                   help="record one page-fault sample (address) per N faults; counts stay exact (default: %(default)s)")
    p.add_argument("--ring-kb", type=int, default=None,
                   help="ring buffer size of every event type, KiB, power of two (default: sized per type, "
                        "256 KiB to 2 MiB, 8 MiB for the every-syscall and every-send/recv streams of full "
                        "capture or a watch list; `kprobe stats` shows drops per type)")
    p.add_argument("--syscalls", default=None, help="comma-separated syscall names to trace (default: the built-in set)")
    p.add_argument("--retention", type=float, default=6 * 3600, help="keep this many seconds (default: %(default)s)")
    p.add_argument("--retention-mb", type=int, default=2048, help="keep at most this many MiB on disk (default: %(default)s)")
    p.add_argument("--flush-ms", type=float, default=None,
                   help="batch interval to the store or Kafka; each embedded insert costs ~20 ms of CPU whatever "
                        "its size, so a table with under 5000 pending rows waits up to 4x this long; a query "
                        "through the running recorder flushes everything first, so it still sees the last 0.25 s "
                        "(default: 15000 embedded, 1000 with --kafka, where the dataflows' freshness waits on it)")
    p.add_argument("--writer-nice", type=int, default=0, metavar="N",
                   help="nice value of the store writer thread; >0 yields CPU to the observed service but lets "
                        "the writer lag (then drop, counted) on a saturated host (default: %(default)s)")
    p.add_argument("--poll-ms", type=float, default=5.0,
                   help="ring polling interval while rings fill (quiet rings are polled every 250 ms, and the "
                        "kernel wakes the recorder once a ring is 1/8 full); a value above 250 also turns that "
                        "wake-up off, so huge values let rings overflow on purpose (default: %(default)s)")
    from kprobe.otel.cli_args import add_otlp_args

    add_otlp_args(p)
    p.add_argument("--replayable", action="store_true", help="also record what `kprobe replay` needs (see its --help)")
    p.add_argument("--keep-privileges", action="store_true",
                   help="keep root's capabilities for the whole recording; by default, once the probes are "
                        "attached, only CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH are kept "
                        "(+ CAP_KILL for `run`, no_new_privs set) before the store, the OTLP receivers and Kafka "
                        "start (--replayable and --decode-payloads keep them: their uprobes are attached later)")
    from kprobe.agent.pod_args import add_kubelet_args

    add_kubelet_args(p)
    from kprobe.protocols.capture import add_args as add_payload_args

    add_payload_args(p)


def _recorder_config(args: argparse.Namespace, watching: bool):
    from kprobe.agent.pod_args import kubelet_config
    from kprobe.agent.probeset import ProbeConfig
    from kprobe.agent.recorder import RecorderConfig

    ring = None if args.ring_kb is None else args.ring_kb * 1024
    if ring is not None and (ring & (ring - 1) or ring < 4096):
        raise SystemExit(_die("--ring-kb must be a power of two of at least 4"))
    def_sys, def_sock = DETAIL_DEFAULTS[args.detail]
    if args.detail == "bounded" and not watching:
        def_sys = SYSTEM_WIDE_MIN_OFFCPU_US      # syncs system-wide: rows from the same millisecond
    min_sys = args.min_syscall_us if args.min_syscall_us is not None else def_sys
    sock_flush = args.sock_flush_ms if args.sock_flush_ms is not None else def_sock
    min_off = args.min_offcpu_us
    if min_off is None:
        min_off = SYSTEM_WIDE_MIN_OFFCPU_US if args.detail == "bounded" and not watching else WATCHED_MIN_OFFCPU_US
    min_block = args.min_block_us if args.min_block_us is not None else (
        BOUNDED_MIN_BLOCK_US if args.detail == "bounded" else 0)
    if min_sys < 0 or sock_flush < 0 or min_off < 0 or min_block < 0:
        raise SystemExit(_die("--min-offcpu-us, --min-syscall-us, --min-block-us and --sock-flush-ms must be >= 0"))
    probes = ProbeConfig(
        ring_bytes=ring,
        detail=args.detail,
        min_offcpu_ns=int(min_off * 1000),
        min_syscall_ns=int(min_sys * 1000),
        sock_flush_ms=sock_flush,
        min_block_us=min_block,
        fault_sample_every=args.fault_sample,
        watch_pids=list(getattr(args, "watch_pid", None) or []),
        watch_comms=list(getattr(args, "watch_comm", None) or []),
        filter_on=watching,
        syscalls=args.syscalls.split(",") if args.syscalls else None,
    )
    kafka = bool(getattr(args, "kafka", None))
    flush_ms = args.flush_ms if args.flush_ms is not None else (1000.0 if kafka else 15000.0)
    return RecorderConfig(
        probes=probes,
        flush_ms=flush_ms,
        hold_ms=0.0 if kafka else 4 * flush_ms,
        poll_ms=args.poll_ms,
        writer_nice=args.writer_nice,
        retention_s=args.retention,
        retention_bytes=args.retention_mb << 20,
        kubelet=kubelet_config(args),
    )


def _die(msg: str) -> int:
    print(f"kprobe: error: {msg}", file=sys.stderr)
    return 2


def _preflight(data: Path, replayable: bool = False) -> int | None:
    from kprobe.agent.preflight import PreflightError, check_all

    try:
        report = check_all(data, replayable)
    except PreflightError as e:
        return _die(str(e))
    for w in report.warnings():  # what runs degraded for want of a capability (also in kprobe stats)
        print(f"kprobe: warning: {w}", file=sys.stderr)
    return None


def _start_session(args: argparse.Namespace, watching: bool, after_probes=None):
    from kprobe.embedded import EmbeddedSession
    from kprobe.otel.cli_args import otlp_config
    from kprobe.otel.errors import ReceiverBindError
    from kprobe.sinks.chdb_store import StoreBusyError

    try:
        return EmbeddedSession(args.data, _recorder_config(args, watching), otlp_config(args),
                               after_probes=after_probes).start()
    except StoreBusyError as e:
        raise SystemExit(_die(f"{e}; stop it first or use another --data")) from e
    except ReceiverBindError as e:
        raise SystemExit(_die(f"{e}; choose other ports with --otlp-grpc-port/--otlp-http-port "
                              "(0 = any free port) or disable the receiver with --no-otlp")) from e


def _wait_for_stop(stop: threading.Event, duration: float | None) -> None:
    """Wait for SIGINT/SIGTERM (or the duration) in short steps.

    The kernel hands a process signal to any thread that does not block it (chDB's and
    gRPC's threads included); Python runs the handler only when the main thread next
    executes bytecode, which an untimed wait never does: Ctrl-C would go unanswered.
    """
    deadline = time.monotonic() + duration if duration else None
    while not stop.wait(0.5):
        if deadline is not None and time.monotonic() >= deadline:
            return


# `kprobe run` also signals the command it started, which runs as the invoking user: CAP_KILL.
KEEP_RUNNING = frozenset({"BPF", "PERFMON", "SYS_PTRACE", "DAC_READ_SEARCH", "KILL"})


def _drop_privileges(keep: frozenset[str] | None = None) -> None:
    """Once the probes are attached: keep only what a running recorder uses (agent/privileges.py)."""
    from kprobe.agent.privileges import KEEP_RECORDING, drop_to

    if os.geteuid() != 0:
        return  # started with exactly the capabilities it needs (a pod): nothing more to give up
    try:
        d = drop_to(keep or KEEP_RECORDING)
    except OSError as e:
        print(f"kprobe: WARNING: could not drop privileges ({e}); recording with the ones it has", file=sys.stderr)
        return
    print(f"kprobe: probes attached; now running with {', '.join('CAP_' + n for n in d.kept) or 'no capabilities'} "
          "only (--keep-privileges to keep root's)", file=sys.stderr)
    if d.threads_kept:
        print(f"kprobe: WARNING: threads started before the probes kept their capabilities: {', '.join(d.threads_kept)}",
              file=sys.stderr)


def cmd_record(args: argparse.Namespace) -> int:
    if (rc := _preflight(args.data, getattr(args, "replayable", False))) is not None:
        return rc
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
    drop = None if args.keep_privileges or later_attach else _drop_privileges
    session = start_kafka_session(args, _recorder_config(args, watching), drop) if args.kafka else (
        _start_session(args, watching, drop))
    replay_capture = start_replay_capture(args, session)
    payloads = start_payload_capture(args, session)
    from kprobe.cli_serve import start_with_recorder

    api = start_with_recorder(args, session)
    what = "system-wide" if not watching else f"watching pids {args.watch_pid} comms {args.watch_comm}"
    print(f"kprobe: recording {what} into {args.data}" + (f" for {args.duration} s" if args.duration else
          " until Ctrl-C"), file=sys.stderr)
    _wait_for_stop(stop, args.duration)
    if api:
        api.stop()
    if replay_capture:
        replay_capture.stop()
    if payloads:
        payloads.stop()
    session.stop()
    _print_totals(session.recorder.stats)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    if not args.command:
        return _die("kprobe run needs a command after --, e.g. kprobe run -- sleep 1")
    if (rc := _preflight(args.data, getattr(args, "replayable", False))) is not None:
        return rc
    from kprobe.run_as import RunAsError, invoking_user, switch_to

    try:
        user = None if args.as_root else invoking_user()
    except RunAsError as e:
        return _die(str(e))
    umask = os.umask(0o077)  # the recording is owner only; the command gets the caller's umask back
    replayable = bool(getattr(args, "replayable", False))
    if replayable:
        from kprobe.replay.tracee import close_inherited_fds  # imported before the fork
    later_attach = replayable or getattr(args, "decode_payloads", False)
    drop = None if args.keep_privileges or later_attach else (lambda: _drop_privileges(KEEP_RUNNING))
    started = None
    if drop is None:  # root kept: the recorder starts first (--replayable arms its capture for the fork)
        started = _start_run_session(args, None)
    gate_r, gate_w = os.pipe()
    # Otherwise the command's process is forked before the recorder starts: it keeps what it needs to
    # become the invoking user, while the recorder gives up its capabilities once the probes are attached.
    pid = os.fork()
    if pid == 0:  # child: wait until the parent has put us on the watch list, then exec
        os.close(gate_w)
        if os.read(gate_r, 1) != b"x":  # the recorder did not start: run nothing
            os._exit(125)
        if replayable:  # its replay starts with fds 0-2 only: so must the recorded run
            close_inherited_fds()
        os.umask(umask)
        try:
            if user is not None:
                switch_to(user)
        except OSError as e:
            print(f"kprobe: cannot switch to uid {user.uid}: {e}", file=sys.stderr)
            os._exit(126)
        try:
            os.execvp(args.command[0], args.command)
        except OSError as e:
            print(f"kprobe: cannot run {args.command[0]}: {e.strerror}", file=sys.stderr)
            os._exit(127)
    os.close(gate_r)
    if started is None:
        try:
            started = _start_run_session(args, drop)
        except BaseException:
            os.close(gate_w)   # the command's process sees no go and exits
            os.waitpid(pid, 0)
            raise
    session, replay_capture, payloads = started
    session.recorder.watch_pid(pid)
    os.write(gate_w, b"x")
    os.close(gate_w)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda s, _f: os.kill(pid, s))
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    session.recorder.wait_drained(timeout=5.0)
    if replay_capture:
        replay_capture.stop()
    if payloads:
        payloads.stop()
    session.stop()
    _print_totals(session.recorder.stats)
    return code if code >= 0 else 128 - code


def _start_run_session(args: argparse.Namespace, drop):
    """`kprobe run`'s recorder, with its replay and payload captures when asked for."""
    session = _start_session(args, watching=True, after_probes=drop)
    return session, start_replay_capture(args, session), start_payload_capture(args, session)


def start_replay_capture(args: argparse.Namespace, session):
    from kprobe.replay.capture import start_if_requested

    return start_if_requested(args, session)


def start_payload_capture(args: argparse.Namespace, session):
    from kprobe.protocols.capture import start_if_requested

    return start_if_requested(args, session)


def _print_totals(stats) -> None:
    written = sum(stats.written.values())
    lost = stats.total_drops()
    print(f"kprobe: {written} events stored, {lost} lost" + (" (see kprobe stats)" if lost else ""), file=sys.stderr)


def _open(args: argparse.Namespace):
    from kprobe.query.client import QueryError, open_store

    try:
        return open_store(args.data)
    except QueryError as e:
        raise SystemExit(_die(str(e))) from e


def cmd_events(args: argparse.Namespace) -> int:
    from kprobe.query.events import EventQuery, fetch, format_row
    from kprobe.query.timefmt import parse_ts

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
        return _die(str(e))
    store = _open(args)
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


def cmd_stats(args: argparse.Namespace) -> int:
    from kprobe.query.stats import collect, render

    store = _open(args)
    data = collect(store, args.data)
    if args.json:
        json.dump(data, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(render(data))
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    from kprobe.query.client import QueryError
    from kprobe.query.sql import SqlPolicy, SqlRefused, explain_failure

    try:
        sql = SqlPolicy(write=args.write, timeout_s=args.timeout).apply(args.query)
    except SqlRefused as e:
        return _die(f"query refused: {e}")
    store = _open(args)
    try:
        out = store.query(sql, args.format)
    except (QueryError, RuntimeError) as e:
        return _die(f"query failed: {explain_failure(str(e))}")
    sys.stdout.write(out.decode(errors="replace"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="kprobe",
        description="Kernel-level visibility for financial systems: eBPF capture with zero changes to services.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND")

    p = sub.add_parser("record", help="record kernel events into the flight recorder",
                       description="Attach the probes and record until --duration or Ctrl-C. Needs root.",
                       epilog=CAPTURE_POLICY, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_capture_args(p, "bounded")
    p.add_argument("--duration", type=float, default=None, help="seconds to record (default: until Ctrl-C)")
    p.add_argument("--watch-comm", nargs="+", metavar="NAME", help="record high-volume streams only for these process names")
    p.add_argument("--watch-pid", nargs="+", type=int, metavar="PID", help="... and/or these pids (and their children)")
    add_kafka_args(p)
    from kprobe.cli_serve import add_record_args

    add_record_args(p)
    p.set_defaults(fn=cmd_record)

    p = sub.add_parser("run", help="record for the lifetime of a command and its children",
                       description="kprobe run [options] -- COMMAND [ARGS...]; exits with the command's status.",
                       epilog=CAPTURE_POLICY, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_capture_args(p, "full")
    p.add_argument("--as-root", action="store_true",
                   help="run the command as root; by default, under sudo, it runs as the user who invoked sudo "
                        "(SUDO_UID/SUDO_GID, with that user's groups, HOME, USER and LOGNAME)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("events", help="list recorded events")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--pid", type=int, help="process or thread id")
    p.add_argument("--type", nargs="+", metavar="T", help="event types: offcpu proc fault reclaim oom tcp_state sock_io "
                   "tcp_retrans syscall fd_open block_io")
    p.add_argument("--from", dest="from_", metavar="T1", help="UTC ns since the epoch or ISO-8601")
    p.add_argument("--to", metavar="T2", help="UTC ns since the epoch or ISO-8601")
    p.add_argument("--limit", type=int, default=10000)
    p.add_argument("--json", action="store_true", help="JSON array of events with all fields (UTC ns timestamps)")
    p.set_defaults(fn=cmd_events)

    p = sub.add_parser("stats", help="events per type, drops, attach status, clock method")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_stats)

    p = sub.add_parser("sql", help="run SQL against the store (tables: see `kprobe stats`); read-only unless --write",
                       description="Run one SQL query. Read-only by default (ClickHouse readonly = 1: no INSERT, DDL, "
                                   "file(), url(), executable(), INTO OUTFILE), bounded by --timeout.")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--write", action="store_true",
                   help="allow statements that write (INSERT, ALTER, DROP, file()/url() table functions) and run "
                        "them as written, without the timeout: they run with the recorder's privileges")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S",
                   help="seconds a read-only query may run before it is stopped (default: %(default)s)")
    p.add_argument("--format", default="PrettyCompact", help="ClickHouse output format (default: %(default)s)")
    p.add_argument("query")
    p.set_defaults(fn=cmd_sql)

    from kprobe.causal.cli_why import add_parser as add_why_parser
    from kprobe.cli_business import add_parsers as add_business_parsers
    from kprobe.cli_business import extend_why
    from kprobe.cli_dataflow_causality import add_parser as add_causality_parser
    from kprobe.cli_graph import add_parser as add_graph_parser

    extend_why(add_why_parser(sub, DEFAULT_DATA))
    add_business_parsers(sub, DEFAULT_DATA)
    from kprobe.causal.cli_incidents import add_parser as add_incidents_parser

    add_incidents_parser(sub, DEFAULT_DATA)
    from kprobe.cli_demo import add_parser as add_demo_parser

    add_demo_parser(sub)
    add_graph_parser(sub, DEFAULT_DATA)
    add_dataflow_parser(sub)
    add_causality_parser(sub, DEFAULT_DATA)  # after `add_dataflow_parser`: it joins that command
    from kprobe.cli_replay import add_parser as add_replay_parser

    add_replay_parser(sub, DEFAULT_DATA)
    from kprobe.cli_export import add_parser as add_export_parser
    from kprobe.cli_serve import add_parser as add_serve_parser

    add_serve_parser(sub, DEFAULT_DATA)
    add_export_parser(sub, DEFAULT_DATA)
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
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `kprobe events | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
