"""What the causal analysis reads: the record types, the ``Evidence`` bundle, the store's interface, and
the constants both sides must agree on.

``fetch`` fills an Evidence from the store (or rows in memory); ``analyze`` reads it and never the
store. Both import from here, so the analysis can be run and tested on hand-built records without
the query code, and a window bound changed here changes what is read and what is assumed alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import msgspec

from kprobe.causal.model import Interval

# Shared by the reads and the analysis: what one selects, the other relies on finding.
RECLAIM_CONTEXT_NS = 5_000_000_000   # reclaim by others this long before the window still names the memory hog
IRQ_AFTER_NS = 3_000_000_000          # the interrupt-counter sample after the window (every 1 s, written at the next flush)
THROTTLE_AFTER_NS = 3_000_000_000     # the CPU-quota sample after the window (every 250 ms, written at the next flush)
DISK_WAIT_CALLS = ("fsync", "fdatasync", "sync_file_range")
LONG_PREEMPTED_NS = 50_000_000   # a preempted wait this long is credited to whoever held the CPU meanwhile
STALE_SWITCH_NS = 1_000_000_000   # a switch-in seen longer ago than this says nothing about who runs now
WAKE_EPS_NS = 200_000      # a wake-up traced on the target CPU lands this close to the waker's syscall
WAKER_CALLS = ("futex", "write", "writev", "pwrite64", "sendto", "sendmsg", "sendmmsg", "close")


class Store(Protocol):
    def query(self, sql: str, fmt: str = "JSONEachRow") -> bytes: ...

    def query_rows(self, sql: str) -> list[dict]: ...


class Record(msgspec.Struct, frozen=True, array_like=True):
    """A stored row as the analysis reads it: hashable, compared by value, decoded straight from a JSON array.

    Window reads move thousands of rows; a Struct decodes from the store's JSON
    in C, where building frozen dataclasses cost more than the query.
    """


class OffCpu(Record):
    tgid: int
    tid: int
    comm: str
    ts: int
    end_ts: int
    wake_ts: int
    reason: str
    cpu_off: int
    cpu_on: int
    preemptor_tgid: int
    preemptor_tid: int
    preemptor_comm: str
    waker_tgid: int
    waker_tid: int
    waker_comm: str
    displaced_tgid: int = 0     # who held cpu_on right before the thread came back (0: idle or not recorded)
    displaced_tid: int = 0
    displaced_comm: str = ""
    displaced_since: int = 0    # since when the displaced task had held cpu_on (0: unknown)
    preemptor_process: str = ""     # the process names (main thread's comm) of preemptor, waker and displaced
    waker_process: str = ""
    displaced_process: str = ""
    # the call it blocked in, read at switch-out ('' when none or not recorded), its fd argument,
    # and the socket behind that fd (skaddr 0: not a socket)
    syscall: str = ""
    fd: int = -1
    skaddr: int = 0
    saddr: str = ""
    sport: int = 0
    daddr: str = ""
    dport: int = 0
    dev: int = 0        # a regular file behind fd: its device, as Syscall.dev (0: not a file or not recorded)


class Syscall(Record):
    tgid: int
    tid: int
    syscall: str
    fd: int
    ts: int
    end_ts: int
    ret: int
    bytes: int
    dev: int = 0      # the synced file's device (fsync family), 0 when not known


class Reclaim(Record):
    tgid: int
    tid: int
    comm: str
    kind: str
    ts: int
    end_ts: int
    nr_reclaimed: int
    cpu: int
    memcg: int = 0     # the reclaiming task's memory cgroup id (0: unknown)


class ReclaimTotal(Record):
    """One process's reclaim in one memory cgroup around a window: ranks the likeliest memory hog."""

    tgid: int
    memcg: int
    comm: str
    stall_ns: int     # reclaim time overlapping the range
    pages: int        # pages reclaimed by the stalls that touch it


def reclaim_totals(rows: list[Reclaim], lo: int, hi: int) -> list[ReclaimTotal]:
    """Per (tgid, memcg): what the reclaim stalls touching [lo, hi] add up to (the SQL of round 0, in Python)."""
    per: dict[tuple[int, int], list] = {}
    for r in rows:
        if r.end_ts >= lo and r.ts <= hi:
            t = per.setdefault((r.tgid, r.memcg), [r.comm, r.ts, 0, 0])
            if r.ts > t[1]:
                t[0], t[1] = r.comm, r.ts      # the latest name, as argMax(comm, ts) picks it
            t[2] += max(0, min(r.end_ts, hi) - max(r.ts, lo))
            t[3] += r.nr_reclaimed
    return [ReclaimTotal(tg, mc, c, ns, pages) for (tg, mc), (c, _, ns, pages) in sorted(per.items())]


class MemcgMember(Record):
    """One member of a memory cgroup in reclaim, as the agent saw it then (agent/memcg_members.py)."""

    memcg: int
    ts: int
    tgid: int       # 0: the cgroup had no member left
    comm: str
    rss_anon: int
    rss_shmem: int
    io_bytes: int          # read_bytes + write_bytes of its life: bounds the page cache it brought in
    memcg_usage: int
    memcg_limit: int
    memcg_file: int
    memcg_dirty: int
    memcg_writeback: int
    cgroup: str = ""

    @property
    def held_bytes(self) -> int:
        """What it likely holds of the cgroup's memory: its anonymous and shared memory (exact) plus its
        file I/O, capped at the cgroup's page cache (the kernel keeps no per-task page-cache charge)."""
        return self.rss_anon + self.rss_shmem + min(self.io_bytes, self.memcg_file)


class Fault(Record):
    tgid: int
    tid: int
    ts: int
    count: int


class BlockIO(Record):
    tgid: int
    tid: int
    comm: str
    ts: int
    end_ts: int
    bytes: int
    rwbs: str
    dev: int = 0


class SockIO(Record):
    tgid: int
    tid: int
    ts: int
    skaddr: int
    dir: str
    bytes: int
    saddr: str
    sport: int
    daddr: str
    dport: int


class Retrans(Record):
    ts: int
    skaddr: int
    saddr: str
    sport: int
    daddr: str
    dport: int


class CgroupCpu(Record):
    """A sample of a CPU-quota cgroup's throttle counters (cumulative), with one member (agent/cgroup_cpu.py)."""

    cgroup_id: int
    ts: int
    cgroup: str
    quota_us: int
    period_us: int
    nr_periods: int
    nr_throttled: int
    throttled_ns: int
    usage_ns: int
    tgid: int        # 0: counters only
    comm: str
    cpu_ns: int      # the member's CPU time so far


class CpuIrq(Record):
    """A sample of one CPU's interrupt counters, cumulative (agent/cpu_irq.py): time in hard and soft
    interrupts, and each softirq kind's raises (the order of ``SOFTIRQ_KINDS``)."""

    cpu: int
    ts: int
    irq_ns: int
    softirq_ns: int
    hi: int
    timer: int
    net_tx: int
    net_rx: int
    block: int
    irq_poll: int
    tasklet: int
    sched: int
    hrtimer: int
    rcu: int


class FdOpen(Record):
    tgid: int
    fd: int
    ts: int
    path: str


@dataclass
class Evidence:
    """Everything recorded that bears on one interval, already typed. Keyed by tid where per-thread."""

    interval: Interval
    offcpu: dict[int, list[OffCpu]] = field(default_factory=dict)
    syscalls: dict[int, list[Syscall]] = field(default_factory=dict)
    # the call each off-CPU row blocked in (read at switch-out), by tid: what the analysis falls back
    # on where no traced call covers a wait (bounded system-wide capture traces few calls)
    blocked_calls: dict[int, list[Syscall]] = field(default_factory=dict)
    reclaims: list[Reclaim] = field(default_factory=list)      # stalls overlapping the window
    # per process and memcg over the window plus RECLAIM_CONTEXT_NS before it; None: derive from ``reclaims``
    reclaim_totals: list[ReclaimTotal] | None = None
    faults: list[Fault] = field(default_factory=list)
    block_io: list[BlockIO] = field(default_factory=list)
    sock_io: list[SockIO] = field(default_factory=list)
    retrans: list[Retrans] = field(default_factory=list)
    fd_open: list[FdOpen] = field(default_factory=list)
    memcg_members: list[MemcgMember] = field(default_factory=list)   # snapshots of memcgs in reclaim
    cgroup_cpu: list[CgroupCpu] = field(default_factory=list)        # samples of CPU-quota cgroups being throttled
    cpu_irq: list[CpuIrq] = field(default_factory=list)              # per-CPU interrupt counters around the window
    # other threads' off-CPU rows on the CPUs where fetched threads waited in the run queue, over those waits:
    # who held a CPU is read from every thread's switches there, not only the related processes' (cpu_rows)
    cpu_rows: list[OffCpu] = field(default_factory=list)
    # every process's sync calls (fsync, fdatasync, sync_file_range) overlapping the window, read with block_io:
    # who was already waiting for a device when a thread started to (disk_waits)
    disk_waits: list[Syscall] = field(default_factory=list)
    comms: dict[int, str] = field(default_factory=dict)       # tgid -> comm, see note_comm
    comm_rank: dict[int, tuple[bool, int, str]] = field(default_factory=dict)   # tgid -> (main thread?, ts, comm)
    fetched_tgids: set[int] = field(default_factory=set)
    queries: int = 0
    truncated: list[str] = field(default_factory=list)      # what a row or fan-out bound cut: never silent

    def note_comm(self, tgid: int, tid: int, ts: int, comm: str) -> None:
        """Name a process after its main thread's latest comm, else any thread's latest one.

        Threads rename themselves (``grpc_global_tim``), so the first row seen is
        often a worker; the main thread (tid == tgid) carries the process name, and
        the latest one wins because a process seen as ``sh`` may exec into the real one.
        """
        if not tgid or not comm:
            return
        rank = (tid == tgid, ts, comm)      # the comm only breaks ties, so row order never matters
        if rank > self.comm_rank.get(tgid, (False, -1, "")):
            self.comm_rank[tgid] = rank
            self.comms[tgid] = comm

    def add_offcpu(self, rows: list[OffCpu]) -> None:
        touched = set()
        for r in rows:
            self.offcpu.setdefault(r.tid, []).append(r)
            self.note_comm(r.tgid, r.tid, r.ts, r.comm)
            touched.add(r.tid)
        for t in touched:       # only the threads that got rows: a busy window has thousands of others
            self.offcpu[t].sort(key=lambda r: r.ts)

    def add_syscalls(self, rows: list[Syscall]) -> None:
        touched = set()
        for r in rows:
            self.syscalls.setdefault(r.tid, []).append(r)
            touched.add(r.tid)
        for t in touched:
            self.syscalls[t].sort(key=lambda r: r.ts)

    def has_data(self) -> bool:
        tg = self.interval.tgid
        return (any(r.tgid == tg for v in self.offcpu.values() for r in v)
                or any(r.tgid == tg for v in self.syscalls.values() for r in v)
                or any(r.tgid == tg for r in self.faults)
                or any(r.tgid == tg for r in self.sock_io))
