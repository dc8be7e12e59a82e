"""Slow or failed operations, newest first, each with an id that `kprobe why --incident` explains.

Two sources, so uninstrumented services are covered too:

* spans: status ERROR, or longer than ``slow_ns`` (id ``span-<span_id>``);
* kernel only (watched processes): calls that do work and took longer than ``slow_ns`` (ledger
  writes, fsync, connect, sends; not idle waits such as accept, recv, poll, futex or sleeps,
  which are long on any healthy idle server), run-queue waits (preempted while runnable, or
  woken and then runnable that long: only that part, from the wake-up) and
  uninterruptible blocked intervals (disk, reclaim, page-cache locks) that long (id
  ``k-<pid>-<tid>-<from_ns>-<to_ns>``). A kernel incident inside a span incident of the same
  process, or an off-CPU interval inside a slow call of the same thread, is left out: the outer
  one already names it. So are kernel threads waiting for work (kdamond, kworker, rcu_preempt
  idle in an uninterruptible sleep): they are long on any healthy host and delay nobody.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from kprobe.causal.records import Store
from kprobe.causal.span_chain import SPAN_COLS, SpanRef
from kprobe.schemas.store_tables import STATUS_ERROR

DEFAULT_SLOW_NS = 500_000_000
WORK_CALLS = ("write", "writev", "pwrite64", "pwritev", "pwritev2", "fsync", "fdatasync", "sync_file_range",
              "connect", "sendto", "sendmsg", "sendmmsg", "openat", "pread64", "preadv", "preadv2")
_KERNEL_ID = re.compile(r"^k-(\d+)-(\d+)-(\d+)-(\d+)$")
_SPAN_ID = re.compile(r"^span-([0-9a-f]{16})$")
# kernel threads, by name, for processes the recording has no identity row for (no exe, no cmdline otherwise)
_KTHREAD = re.compile(r"^(kworker/|kdamond|rcu_|ksoftirqd/|kswapd|kcompactd|khugepaged|jbd2/|migration/|watchdog"
                      r"|kthreadd|oom_reaper|kauditd|khungtaskd|irq/|scsi_|ext4-|xfs|kblockd|cpuhp/|idle_inject/"
                      r"|kdevtmpfs|ksmd|kintegrityd|writeback|napi/|kstrp|zswap|btrfs-|kcryptd|dmcrypt|loop\d+$"
                      r"|md\d*_|card\d|kmpath|kthrotld|kpsmoused|ipv6_addrconf|mm_percpu_wq|kverityd)")


def idle_kernel_wait(reason: str, syscall: str, comm: str, exe: str | None, cmdline: str | None) -> bool:
    """A kernel thread sleeping uninterruptibly without a syscall (kernel threads make none): waiting for work.

    A user thread in an uninterruptible wait outside a syscall (a page fault on a slow disk) is kept: it
    has an exe or a command line; without an identity row the name decides.
    """
    if reason != "uninterruptible" or syscall:
        return False
    if exe is not None or cmdline is not None:
        return not exe and not cmdline
    return bool(_KTHREAD.match(comm))


@dataclass(frozen=True)
class Incident:
    id: str
    start_ns: int
    end_ns: int
    pid: int
    tid: int
    comm: str              # service name for spans, process name otherwise
    what: str              # "span POST /pay", "fsync fd=7", "run-queue wait on CPU 1"
    error: str             # status message / errno, "" when only slow
    source: str            # "span" | "kernel"

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "start_ns": self.start_ns, "end_ns": self.end_ns, "duration_ns": self.duration_ns,
                "pid": self.pid, "tid": self.tid, "comm": self.comm, "what": self.what, "error": self.error,
                "source": self.source, "why": f"kprobe why --incident {self.id}"}


def parse_incident_id(text: str) -> tuple[str, Any]:
    """``("span", span_id)`` or ``("kernel", (pid, tid, from_ns, to_ns))``; ValueError otherwise."""
    t = text.strip().lower()
    if m := _SPAN_ID.match(t):
        return "span", m.group(1)
    if m := _KERNEL_ID.match(t):
        pid, tid, lo, hi = (int(x) for x in m.groups())
        if hi <= lo:
            raise ValueError(f"incident {text!r}: end before start")
        return "kernel", (pid, tid, lo, hi)
    raise ValueError(f"not an incident id: {text!r} (expected span-<16 hex> or k-<pid>-<tid>-<from_ns>-<to_ns>)")


def _horizon(rows: list[dict[str, Any]], fetched: int, end_col: str) -> int:
    """The oldest end a query cut off at ``fetched`` rows still answers exactly for (0: it was not cut)."""
    return int(rows[-1][end_col]) if len(rows) >= fetched else 0


def span_incidents(store: Store, slow_ns: int, limit: int) -> tuple[list[Incident], int]:
    """The ``limit`` newest span incidents and the end before which more may exist (0: none do)."""
    rows = store.query_rows(f"SELECT {SPAN_COLS} FROM spans WHERE status_code = {STATUS_ERROR} "
                            f"OR duration_ns >= {int(slow_ns)} ORDER BY end_ns DESC LIMIT {int(limit)}")
    out = []
    for r in rows:
        s = SpanRef.from_row(r)
        out.append(Incident(f"span-{s.span_id}", s.start_ns, s.end_ns, s.pid, s.tid, s.service or "?",
                            f"span {s.name}", s.status_message or ("ERROR" if s.error else ""), "span"))
    return out, _horizon(rows, limit, "end_ns")


def kernel_incidents(store: Store, slow_ns: int, limit: int) -> tuple[list[Incident], int]:
    """Kernel incidents among the ``limit`` newest slow calls and intervals, and the end before which more may exist.

    Some fetched rows are dropped (idle kernel threads, intervals inside a slow call), so fewer than
    ``limit`` may come back although older ones exist: the horizon says where this answer stops being whole.
    """
    calls = ", ".join(f"'{c}'" for c in WORK_CALLS)  # constants, not input
    rows = store.query_rows(
        "SELECT tgid, tid, syscall, toInt64(fd) AS fd, ts, end_ts, ret FROM syscall "
        f"WHERE syscall IN ({calls}) AND end_ts - ts >= {int(slow_ns)} ORDER BY end_ts DESC LIMIT {int(limit)}")
    rq = store.query_rows(
        "SELECT tgid, tid, comm, reason, ts, end_ts, wake_ts, cpu_off, cpu_on, preemptor_comm, preemptor_process, "
        "preemptor_tgid, syscall FROM offcpu "
        f"WHERE (reason IN ('preempted', 'uninterruptible') AND end_ts - ts >= {int(slow_ns)}) "
        # woken, then runnable that long before it got a CPU: a wait as long as a preemption, whatever it slept in
        f"OR (wake_ts > 0 AND end_ts >= wake_ts + {int(slow_ns)}) "
        f"ORDER BY end_ts DESC LIMIT {int(limit)}")
    tgids = {int(r["tgid"]) for r in rows} | {int(r["tgid"]) for r in rq}
    comms: dict[int, str] = {}
    ident: dict[int, tuple[str, str]] = {}
    if tgids:
        # the main thread's latest name as the scheduler saw it (a service renames itself after exec;
        # the processes table keeps the name at first sight), else the process table's
        ids = ", ".join(str(t) for t in sorted(tgids))
        for r in store.query_rows(f"SELECT tgid, argMax(comm, ts) AS comm, argMax(exe, ts) AS exe, "
                                  f"argMax(cmdline, ts) AS cmdline FROM processes WHERE tgid IN ({ids}) GROUP BY tgid"):
            comms[int(r["tgid"])] = str(r["comm"])
            ident[int(r["tgid"])] = (str(r["exe"]), str(r["cmdline"]))
        for r in store.query_rows(f"SELECT tgid, argMax(comm, ts) AS comm FROM offcpu WHERE tgid IN ({ids}) "
                                  "AND tid = tgid GROUP BY tgid"):
            comms[int(r["tgid"])] = str(r["comm"])
    out = []
    for r in rows:
        pid, tid, lo, hi = int(r["tgid"]), int(r["tid"]), int(r["ts"]), int(r["end_ts"])
        fd, ret = int(r["fd"]), int(r["ret"])
        what = f"{r['syscall']}" + (f" fd={fd}" if fd >= 0 else "")
        out.append(Incident(f"k-{pid}-{tid}-{lo}-{hi}", lo, hi, pid, tid, comms.get(pid, "?"), what,
                            f"errno {-ret}" if ret < 0 else "", "kernel"))
    calls = [(i.tid, i.start_ns, i.end_ns) for i in out]
    for r in rq:
        pid, tid, lo, hi = int(r["tgid"]), int(r["tid"]), int(r["ts"]), int(r["end_ts"])
        wake = int(r.get("wake_ts") or 0)
        woken_wait = r["reason"] != "preempted" and wake and hi - wake >= slow_ns
        if woken_wait and not (r["reason"] == "uninterruptible" and wake - lo >= slow_ns):
            lo = wake        # the slow part is the run-queue wait after the wake-up
        if any(t == tid and a <= lo and hi <= b for t, a, b in calls):
            continue
        exe, cmdline = ident.get(pid, (None, None))
        if not woken_wait and idle_kernel_wait(str(r["reason"]), str(r.get("syscall") or ""), str(r["comm"]), exe,
                                               cmdline):
            continue
        if lo == wake and woken_wait:
            what = f"run-queue wait after wake-up on CPU {r['cpu_on']}"
        elif r["reason"] == "preempted":
            by = r.get("preemptor_process") or r["preemptor_comm"]     # the process, not its renamed worker
            what = f"run-queue wait on CPU {r['cpu_off']} behind {by} PID {r['preemptor_tgid']}"
        else:
            what = f"blocked (uninterruptible) on CPU {r['cpu_off']}"
        out.append(Incident(f"k-{pid}-{tid}-{lo}-{hi}", lo, hi, pid, tid, comms.get(pid, str(r["comm"])), what,
                            "", "kernel"))
    return out, max(_horizon(rows, limit, "end_ts"), _horizon(rq, limit, "end_ts"))


def incidents(store: Store, slow_ns: int = DEFAULT_SLOW_NS, limit: int = 50) -> list[Incident]:
    """Span and kernel incidents merged, newest end first; kernel ones inside a span of their process dropped.

    The first ``limit`` are the same whatever ``limit`` is (the API pages through them): rows dropped
    after a query's LIMIT would otherwise let a later page skip one. So each query fetches more until
    ``limit`` incidents end after every cut-off query's horizon, or nothing was cut off.
    """
    fetch = max(limit, 1)
    while True:
        spans, h_spans = span_incidents(store, slow_ns, fetch)
        kern, h_kern = kernel_incidents(store, slow_ns, fetch)
        kern = [k for k in kern
                if not any(s.pid == k.pid and s.start_ns <= k.start_ns and k.end_ns <= s.end_ns for s in spans)]
        horizon = max(h_spans, h_kern)
        seen: set[str] = set()
        merged = []
        for inc in sorted(spans + kern, key=lambda i: (i.end_ns, i.id), reverse=True):
            if inc.id not in seen and inc.end_ns > horizon:
                seen.add(inc.id)
                merged.append(inc)
        if len(merged) >= limit or not horizon:
            return merged[:limit]
        fetch *= 4
