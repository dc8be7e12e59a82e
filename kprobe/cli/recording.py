"""What `kprobe record` and `kprobe run` share: the capture policy's options, the recorder's configuration
made from them, the checks before attaching, the session's start, the privilege drop, the totals.

The heavy parts (recorder, probes, chDB, gRPC) are imported when a recording starts, not when the
parser is built: `kprobe --help` stays quick, and numpy's threads start only after ``main`` has
told them not to (see kprobe/cli/__init__.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from kprobe.cli.common import Failed, add_data_arg
from kprobe.cli.kubelet_options import add_kubelet_args, kubelet_config
from kprobe.cli.otlp_options import add_otlp_args, otlp_config
from kprobe.cli.payload_options import add_payload_args, start_payload_capture

CAPTURE_POLICY = """\
capture policy (--detail):
  bounded  (default for `record`) is built to stay on: no program runs on any syscall
           or on every socket send/recv of the host. Off-CPU intervals >= --min-offcpu-us
           (1000 system-wide, 50 for watched processes) are rows carrying the syscall the
           thread blocked in (read from its saved registers at switch-out) and, for socket
           calls, the socket's 4-tuple, for file calls (read, write, fsync, flock, fcntl,
           ...) the file's device, inode and path (walked from its dentry when the row is
           emitted; an fd_open row per new process, fd and file); shorter ones are summed
           into the thread's next row (short_n, short_ns). A sync that waits for its disk
           is such a row. No syscall tracepoint is attached: enabling any one sends every
           syscall of every task through the kernel's slow path (bench/overhead.py
           --modes off,floor,floor-calls: perf bench sched pipe -6 %).
           --call-hooks adds them for fsync, fdatasync, sync_file_range, connect, accept,
           openat and close: connect, accept, openat and close become rows whatever they
           last, syncs when >= --min-syscall-us (1000 system-wide; shorter ones counted).
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


def add_capture_args(p: argparse.ArgumentParser, detail: str) -> None:
    """The options of a recording; ``detail`` is the command's default capture policy."""
    add_data_arg(p)
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
    p.add_argument("--call-hooks", action="store_true",
                   help="with --detail bounded system-wide: also hook fsync, fdatasync, sync_file_range, connect, "
                        "accept, openat and close (every sync timed, opens and closes as rows), at the cost of "
                        "every syscall of the host taking the kernel's slow path (see below)")
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
    g = p.add_argument_group("many hosts", "one agent per node, rows named by host (causal/hosts.py joins them)")
    g.add_argument("--host-name", default=None, metavar="NAME",
                   help="the host every row carries (default: the hostname plus a hash of machine id and boot id)")
    g.add_argument("--netns", type=Path, default=None, metavar="PATH",
                   help="record only processes in this network namespace (/run/netns/NAME, /proc/PID/ns/net) and "
                        "their children: one agent per node")
    g.add_argument("--cgroup", type=Path, default=None, metavar="PATH",
                   help="record only processes in this cgroup directory (and below) and their children")
    g.add_argument("--heartbeat-ms", type=int, default=5000,
                   help="write this agent's hosts row (recording, clock state, newest event) this often "
                        "(default: %(default)s; 0: never)")
    g.add_argument("--clock-skew-ns", type=int, default=0, help=argparse.SUPPRESS)   # tests: an artificial skew
    add_otlp_args(p)
    p.add_argument("--replayable", action="store_true", help="also record what `kprobe replay` needs (see its --help)")
    p.add_argument("--keep-privileges", action="store_true",
                   help="keep root's capabilities for the whole recording; by default, once the probes are "
                        "attached, only CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH are kept "
                        "(+ CAP_KILL for `run`, no_new_privs set) before the store, the OTLP receivers and Kafka "
                        "start (--replayable and --decode-payloads keep them: their uprobes are attached later)")
    add_kubelet_args(p)
    add_payload_args(p)


def recorder_config(args: argparse.Namespace, watching: bool):  # -> RecorderConfig
    """The recorder's configuration from a recording command's options (``watching``: a watch list or `run`)."""
    from kprobe.agent.host_identity import check_host_name
    from kprobe.agent.node_filter import NodeFilter, NodeFilterError
    from kprobe.agent.probeset import ProbeConfig  # lazy: libbpf, numpy and the record layouts
    from kprobe.agent.recorder import EMBEDDED_FLUSH_MS, HOLD_FLUSHES, KAFKA_FLUSH_MS, RecorderConfig

    try:
        node = NodeFilter.of(getattr(args, "netns", None), getattr(args, "cgroup", None))
        host = check_host_name(args.host_name) if getattr(args, "host_name", None) else ""
    except (NodeFilterError, ValueError) as e:
        raise Failed(str(e)) from None
    watching = watching or node is not None
    ring = None if args.ring_kb is None else args.ring_kb * 1024
    if ring is not None and (ring & (ring - 1) or ring < 4096):
        raise Failed("--ring-kb must be a power of two of at least 4")
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
        raise Failed("--min-offcpu-us, --min-syscall-us, --min-block-us and --sock-flush-ms must be >= 0")
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
        node=node,
        syscalls=args.syscalls.split(",") if args.syscalls else None,
        call_hooks=bool(getattr(args, "call_hooks", False)),
    )
    kafka = bool(getattr(args, "kafka", None))
    flush_ms = args.flush_ms if args.flush_ms is not None else (KAFKA_FLUSH_MS if kafka else EMBEDDED_FLUSH_MS)
    return RecorderConfig(
        probes=probes,
        flush_ms=flush_ms,
        hold_ms=0.0 if kafka else HOLD_FLUSHES * flush_ms,
        poll_ms=args.poll_ms,
        writer_nice=args.writer_nice,
        retention_s=args.retention,
        retention_bytes=args.retention_mb << 20,
        kubelet=kubelet_config(args),
        host=host,
        heartbeat_ms=max(0, getattr(args, "heartbeat_ms", 5000)),
        clock_skew_ns=getattr(args, "clock_skew_ns", 0),
    )


def preflight(data: Path, replayable: bool = False) -> None:
    """What the kernel and this process must offer before anything is attached; Failed says what is missing."""
    from kprobe.agent.preflight import PreflightError, check_all

    try:
        report = check_all(data, replayable)
    except PreflightError as e:
        raise Failed(str(e)) from None
    for w in report.warnings():  # what runs degraded for want of a capability (also in kprobe stats)
        print(f"kprobe: warning: {w}", file=sys.stderr)


def start_session(args: argparse.Namespace, watching: bool, after_probes=None):  # -> EmbeddedSession
    """The embedded recorder (probes + chDB store + OTLP receiver), started."""
    from kprobe.embedded import EmbeddedSession
    from kprobe.otel.errors import ReceiverBindError
    from kprobe.sinks.chdb_store import StoreBusyError

    try:
        return EmbeddedSession(args.data, recorder_config(args, watching), otlp_config(args),
                               after_probes=after_probes).start()
    except StoreBusyError as e:
        raise Failed(f"{e}; stop it first or use another --data") from e
    except ReceiverBindError as e:
        raise Failed(f"{e}; choose other ports with --otlp-grpc-port/--otlp-http-port "
                     "(0 = any free port) or disable the receiver with --no-otlp") from e


def start_replay_capture(args: argparse.Namespace, session):  # noqa: ANN001 - EmbeddedSession; -> ReplayCapture | None
    from kprobe.replay.capture import start_if_requested

    return start_if_requested(args, session)


def start_captures(args: argparse.Namespace, session) -> tuple:  # noqa: ANN001 - EmbeddedSession
    """The replay and payload captures beside the recorder, each only when asked for (else None)."""
    return start_replay_capture(args, session), start_payload_capture(args, session)


def drop_privileges(keep: frozenset[str] | None = None) -> None:
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


def stop_all(captures: tuple, session) -> None:  # noqa: ANN001 - EmbeddedSession | KafkaSession
    """The captures first (they write into the session's store), then the session; then the totals."""
    for cap in captures:
        if cap:
            cap.stop()
    session.stop()
    stats = session.recorder.stats
    written = sum(stats.written.values())
    lost = stats.total_drops()
    print(f"kprobe: {written} events stored, {lost} lost" + (" (see kprobe stats)" if lost else ""), file=sys.stderr)

