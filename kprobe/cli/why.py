"""`kprobe why (--span ID | --trace ID | --incident ID | --pid P --from T1 --to T2 | --payment ID | --order ID)`.

The root cause of a slow or failed operation, down to the kernel. The analysis is
:mod:`kprobe.causal` (shared with the API); a payment or order goes through its business
timeline (:mod:`kprobe.cli.timeline`). Exit codes: 0 ok, 1 no span mentions the payment/order,
2 bad arguments or no data (with a message saying what to do).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kprobe.cli.common import add_data_arg, die, store_at
from kprobe.cli.target import add_target_args, parsed_target
from kprobe.cli.timeline import business_timeline

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
  softirq           hard/soft interrupts (a network receive flood, disk completions) took the CPU the thread
                    ran on, or it waited behind ksoftirqd there; evidence: the CPU, the share interrupts took
                    (per-CPU counters sampled every second), the softirqs raised; culprit: that CPU's interrupts
  cpu_migration     moved off its CPU (affinity or cpuset change: by the migration stopper while running, or
                    once while queued, then staying) and waited on the new CPU; culprit: who held that CPU
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


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "why", help="root cause of a slow or failed operation: a span, a trace, an incident or pid+window",
        description="Explain why an operation was slow: wall-time breakdown (on CPU, run queue, blocked) and "
                    "the causal chain (preemption, memory pressure, disk, network, locks, other services) "
                    "down to the root cause.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arg(p)
    what = add_target_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable analysis")
    # business targets join the same required group: `why --payment X --span Y` is refused like any two
    what.add_argument("--payment", metavar="ID", help="a payment id (or UETR): explains its failed/slowest span")
    what.add_argument("--order", metavar="CLORDID", help="a FIX ClOrdID: explains its order's slowest exchange")
    p.add_argument("--domain-map", type=Path, default=None, help="with --payment/--order: domain map YAML "
                                                                 "(default: $KPROBE_DOMAIN_MAP)")
    p.set_defaults(fn=run)
    return p


def run(args: argparse.Namespace) -> int:
    if args.payment or args.order:
        return _why_business(args)
    # lazy: the analysis (msgspec, the causal engine) and the store client are ~60 ms of `kprobe --help`
    from kprobe.causal.span_chain import SpanLookupError
    from kprobe.causal.target import explain
    from kprobe.causal.why import NoDataError, render_text
    from kprobe.query.client import QueryError

    target = parsed_target(args)
    with store_at(args.data) as store:
        try:
            analysis, span_analysis = explain(store, target)
        except (NoDataError, SpanLookupError, ValueError) as e:
            return die(str(e))
        except QueryError as e:
            return die(f"query failed: {e}")
    if args.json:
        json.dump(span_analysis.to_json() if span_analysis else analysis.to_json(), sys.stdout)
        sys.stdout.write("\n")
    else:
        print(span_analysis.render() if span_analysis else render_text(analysis))
    return 0


def _why_business(args: argparse.Namespace) -> int:
    """`why --payment ID / --order CLORDID`: the kernel root cause found on its business timeline."""
    tl, kind, key = business_timeline(args, analyse=True)
    if not tl.events:
        return die(f"no spans mention {kind} {key!r}", 1)
    if args.json:
        json.dump({"key": key, "kind": kind, "root_cause": tl.root_cause, "incidents": tl.incidents,
                   "notes": tl.notes, "events": [e.to_json() for e in tl.events]}, sys.stdout)
        sys.stdout.write("\n")
        return 0
    print(f"{kind.capitalize()} {key}: " + (tl.root_cause + "  [ROOT CAUSE]" if tl.root_cause else
                                           "no kernel delay found"))
    for i in tl.incidents:
        print("INCIDENT: " + i)
    for n in tl.notes:
        print("note: " + n)
    print(f"(kprobe timeline --{kind} {key} shows its {len(tl.events)} events)")
    return 0
