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

from kprobe.causal.cli_target import add_target_args, explain, parse_target

EPILOG = """\
examples:
  kprobe why --span 3f2a9c0d1e2b4a55                  a span (its process, thread and time window)
  kprobe why --trace 4bf92f3577b34da6a3ce929d0e0e4736  the failed (else the longest) span of a trace
  kprobe why --incident span-3f2a9c0d1e2b4a55          an id printed by `kprobe incidents`
  kprobe why --pid 812 --from 2026-11-27T03:47:12Z --to 2026-11-27T03:47:13Z
                                                      an uninstrumented process over a window
  kprobe why --span 3f2a9c0d1e2b4a55 --json            {"root_cause": {"kind", "culprit": {"pid", "comm"},
                                                        "delay_ns", "evidence"}, "breakdown", "chain", ...}

The chain is printed newest effect first; the last link is the root cause.

root-cause kinds (culprit: who caused it; evidence: what the recording shows):
  cpu_preemption    waited runnable while another task held the CPU (preempted, or after a wake-up);
                    culprit: that task
  cpu_throttling    the cgroup's CPU quota (v2 cpu.max, v1 cpu.cfs_quota_us) was used up; evidence: the
                    cgroup, quota/period, throttled time and periods, usage; culprit: the member that spent
                    the quota; fix: raise the quota
  memory_pressure   direct or memcg reclaim (the victim's own, or of whoever held its CPU); culprit: the
                    process that filled the memory (the biggest other reclaimer, or memcg member)
  disk_io           a sync call or uninterruptible read/write waiting for the disk; culprit: the process
                    that issued most I/O to that device meanwhile
  major_fault       a page fault waiting for a disk read (file-backed page not cached, or swap-in): memory
                    the process needed was on disk; culprit: the biggest issuer on that device
  network           a socket wait on a connection with TCP retransmits; culprit: the end that lost them
  lock_contention   futex, flock, fcntl/OFD record locks (the file named), SysV semaphores (semid), the
                    mmap lock; culprit: the holder, i.e. the task that released it and woke the waiter
  remote_service    waited on a socket, pipe or poll for another process; culprit: that process, whose
                    own delays over the wait are followed (the chain)
  sleep             the thread slept or idled by itself (nanosleep, a futex timeout, an idle poll)
  unknown           blocked in a call none of the above explains; the waker is named when known
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
    add_target_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable analysis")
    p.set_defaults(fn=cmd_why)
    return p


def cmd_why(args: argparse.Namespace) -> int:
    from kprobe.causal.spans import SpanLookupError
    from kprobe.causal.why import NoDataError, render_text
    from kprobe.query.client import QueryError, open_store

    try:
        target = parse_target(args)
    except ValueError as e:
        return _die(str(e))
    try:
        store = open_store(args.data)
    except QueryError as e:
        return _die(str(e))
    try:
        analysis, span_analysis = explain(store, target)
    except (NoDataError, SpanLookupError, ValueError) as e:
        return _die(str(e))
    except QueryError as e:
        return _die(f"query failed: {e}")
    finally:
        close = getattr(store, "close", None)
        if close:
            close()
    if args.json:
        json.dump(span_analysis.to_json() if span_analysis else analysis.to_json(), sys.stdout)
        sys.stdout.write("\n")
    else:
        print(span_analysis.render() if span_analysis else render_text(analysis))
    return 0
