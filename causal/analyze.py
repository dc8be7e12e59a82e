"""Pure causal analysis over an ``Evidence`` bundle: no store, no engine, no global state.

The victim thread's wall time over the window is split exactly into on-CPU,
run-queue wait and blocked time using its recorded off-CPU intervals. Each
off-CPU piece is then explained:

* run-queue wait after being preempted -> ``cpu_preemption`` by the task that was
  switched in; if that task was in direct reclaim meanwhile, the preemption is
  explained by ``memory_pressure`` (a child cause);
* blocked time is classified by the syscall in flight and by who woke the
  thread: futex woken by another thread = ``lock_contention``; socket waits =
  ``network`` when the connection retransmitted (culprit: the owner of the end
  whose segments were lost, from the retransmit's own 4-tuple) or
  ``remote_service`` (the peer process found by the reversed 4-tuple in the
  socket I/O, the thread that sent last before the wake-up; no instrumentation);
  pipe/IPC/poll waits woken by another process = ``remote_service``;
  uninterruptible disk calls = ``disk_io`` (culprit: the user process that issued
  most bytes to the waited-on device, kernel dispatchers counting as the waiter);
  the thread's own direct/memcg reclaim = ``memory_pressure`` (culprit: the
  biggest other reclaimer, i.e. whoever else is filling the memory; in a memcg
  where no one else reclaimed, the member holding most of it); timed
  sleeps = ``sleep``;
* a waker is followed recursively: its own delays inside the window the victim
  waited for it become children (depth-limited, with a cycle guard), because the
  victim's wait is only as long as the waker's path to the wake-up.

Causes are aggregated per (kind, culprit) and ranked by the delay they explain;
the root cause is the deepest cause on the largest-delay path.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from msgspec.structs import replace

from kprobe.causal.model import Analysis, Breakdown, Cause, Culprit, Interval, PreemptorShare
from kprobe.causal.records import (
    DISK_WAIT_CALLS,
    LONG_PREEMPTED_NS,
    RECLAIM_CONTEXT_NS,
    STALE_SWITCH_NS,
    THROTTLE_AFTER_NS,
    WAKE_EPS_NS,
    WAKER_CALLS,
    BlockIO,
    CgroupCpu,
    CpuIrq,
    Evidence,
    MemcgMember,
    OffCpu,
    Reclaim,
    SockIO,
    Syscall,
    reclaim_totals,
)

MAX_DEPTH = 4
SIGNIFICANT = 0.2          # a child must explain at least this share of its parent to continue the chain
MIN_CAUSE_NS = 100_000     # causes explaining less than 0.1 ms are noise for "why was it slow"
MAX_EVIDENCE = 8

SLEEP_CALLS = {"nanosleep", "clock_nanosleep"}
MUX_CALLS = {"poll", "ppoll", "select", "pselect6", "epoll_wait", "epoll_pwait"}
SOCK_CALLS = {"recvfrom", "recvmsg", "recvmmsg", "accept", "accept4", "connect", "sendto", "sendmsg", "sendmmsg"}
READ_CALLS = {"read", "readv", "pread64", "preadv", "preadv2"}
WRITE_CALLS = {"write", "writev", "pwrite64", "pwritev", "pwritev2"}
DISK_CALLS = set(DISK_WAIT_CALLS)
# calls that block only to wait for a lock another task holds: what the lock is, per call
FILE_LOCK_CALLS = {"flock": "flock", "fcntl": "fcntl record lock"}
SEM_CALLS = {"semop", "semtimedop"}
# uninterruptible waits in these calls are waits for a kernel lock (the mmap lock), not for a disk
MMAP_LOCK_CALLS = {"mmap", "munmap", "mprotect", "mremap", "brk", "madvise"}


@dataclass
class _Piece:
    """One explained chunk of a thread's off-CPU time, before aggregation into causes."""

    kind: str
    culprit: Culprit
    delay_ns: int
    evidence: list = field(default_factory=list)
    children: list[Cause] = field(default_factory=list)
    cpu: int | None = None
    summary: str = ""
    bucket: str = ""        # breakdown bucket: io / net / futex / ""
    follow: int = 0         # the waker thread whose own delays over ``seg`` explain this piece (0: none)
    seg: tuple[int, int] = (0, 0)


class _SwitchIn(NamedTuple):
    """A task switched in on a CPU at ``ts``, and the task it displaced there (tid -1: not recorded)."""

    ts: int
    tgid: int
    tid: int
    comm: str
    displaced_tgid: int
    displaced_tid: int
    displaced_comm: str
    since: int          # when the displaced task had got the CPU (0: unknown)

    def displaced(self) -> _SwitchIn:
        """The displaced task, as the one holding the CPU up to ``ts`` (what it displaced: not known)."""
        return _SwitchIn(self.ts, self.displaced_tgid, self.displaced_tid, self.displaced_comm, 0, -1, "", 0)


@dataclass
class _Holder:
    """A process found holding a CPU a thread waited for: how long, its thread, how it was found."""

    ns: int
    tid: int
    comm: str
    how: str            # switch-in / displaced / reclaim


class _HeldStretch(NamedTuple):
    """One run-queue wait [a, b] on ``cpu`` and the ``ns`` of it a process's thread held that CPU."""

    a: int
    b: int
    tid: int
    comm: str
    ns: int
    cpu: int
    how: str


def _clip(a: int, b: int, lo: int, hi: int) -> tuple[int, int]:
    return max(a, lo), min(b, hi)


def _overlap(a: int, b: int, lo: int, hi: int) -> int:
    return max(0, min(b, hi) - max(a, lo))


def _union(segs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, non-overlapping cover of the segments (parallel reclaimers overlap each other)."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(segs):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


class _ByTime:
    """Rows sorted by start, to find those overlapping [a, b] without scanning them all.

    A busy host's window holds thousands of short reclaim stalls and each run-queue
    wait asks which of them overlap it: bisect from ``a`` minus the longest row.
    """

    def __init__(self, rows: Iterable[Reclaim]):
        self.rows = sorted(rows, key=lambda r: r.ts)
        self.starts = [r.ts for r in self.rows]
        self.longest = max((r.end_ts - r.ts for r in self.rows), default=0)
        import numpy as np  # here, not at module level: `kprobe why` starts ~0.16 s sooner without reclaim rows

        self._ts = np.array(self.starts, dtype=np.int64)
        self._end = np.array([r.end_ts for r in self.rows], dtype=np.int64)
        self._pages = np.array([r.nr_reclaimed for r in self.rows], dtype=np.int64)

    def overlap_totals(self, segs: list[tuple[int, int]]) -> tuple[int, int, int]:
        """(ns of overlap with the segments, rows that overlap any, their pages): one array pass per segment."""
        import numpy as np

        ov = np.zeros(len(self.rows), dtype=np.int64)
        for a, b in segs:
            i, j = bisect_left(self.starts, a - self.longest), bisect_right(self.starts, b)
            ov[i:j] += np.clip(np.minimum(self._end[i:j], b) - np.maximum(self._ts[i:j], a), 0, None)
        hit = ov > 0
        return int(ov.sum()), int(hit.sum()), int(self._pages[hit].sum())

    def indices(self, a: int, b: int) -> list[int]:
        """Positions of the rows with a positive overlap with [a, b], by start."""
        i, j = bisect_left(self.starts, a - self.longest), bisect_right(self.starts, b)
        rows = self.rows
        return [k for k in range(i, j) if _overlap(rows[k].ts, rows[k].end_ts, a, b) > 0]

    def overlapping(self, a: int, b: int) -> list[Reclaim]:
        return [self.rows[k] for k in self.indices(a, b)]


class _Spans:
    """Rows with [ts, end_ts], sorted by start, and the ones overlapping [a, b] found by bisect.

    A busy window holds thousands of block requests and each disk wait asks which
    overlap it: scanning them all per wait made the analysis quadratic in the window.
    Rows longer than SHORT_NS (a stuck request, a long call) are few and kept apart,
    so that one of them does not widen every lookup's reach back in time.
    """

    SHORT_NS = 50_000_000

    def __init__(self, rows: Iterable):
        allr = sorted(rows, key=lambda r: r.ts)
        self.rows = [r for r in allr if r.end_ts - r.ts <= self.SHORT_NS]
        self.long = [r for r in allr if r.end_ts - r.ts > self.SHORT_NS]
        self.starts = [r.ts for r in self.rows]
        self.longest = max((r.end_ts - r.ts for r in self.rows), default=0)

    def _merge(self, short: list, long: list) -> list:
        return sorted(short + long, key=lambda r: r.ts) if long else short

    def overlapping(self, a: int, b: int) -> list:
        i, j = bisect_left(self.starts, a - self.longest), bisect_right(self.starts, b)
        return self._merge([r for r in self.rows[i:j] if r.end_ts > a and r.ts < b and r.end_ts > r.ts],
                           [r for r in self.long if r.end_ts > a and r.ts < b and r.end_ts > r.ts])

    def containing(self, t: int, eps: int = 0) -> list:
        """Rows with ts - eps <= t <= end_ts + eps, by start."""
        i, j = bisect_left(self.starts, t - self.longest - eps), bisect_right(self.starts, t + eps)
        return self._merge([r for r in self.rows[i:j] if r.ts - eps <= t <= r.end_ts + eps],
                           [r for r in self.long if r.ts - eps <= t <= r.end_ts + eps])


class _SockIndex:
    """Socket I/O records (with their position in the evidence) sorted by time, for the lookups by time
    a socket wait makes; each answers what a scan of the evidence in its order would."""

    def __init__(self, rows: list[tuple[int, SockIO]]):
        self.rows = sorted(rows, key=lambda x: (x[1].ts, x[0]))
        self.ts = [k.ts for _, k in self.rows]
        best: tuple[int, SockIO] | None = None
        self.prefix_latest: list[SockIO] = []      # per prefix: its record latest in evidence order
        for x in self.rows:
            if best is None or x[0] > best[0]:
                best = x
            self.prefix_latest.append(best[1])

    def first_between(self, a: int, b: int) -> SockIO | None:
        """The earliest in evidence order with a <= ts <= b."""
        got = self.rows[bisect_left(self.ts, a):bisect_right(self.ts, b)]
        return min(got, key=lambda x: x[0])[1] if got else None

    def last_until(self, t: int) -> SockIO | None:
        """The latest in evidence order with ts <= t."""
        j = bisect_right(self.ts, t)
        return self.prefix_latest[j - 1] if j else None

    def latest_until(self, t: int, not_tgid: int) -> SockIO | None:
        """Of the records of other processes than ``not_tgid``: the one with the greatest ts <= t (the
        earliest in evidence order among equal times), else the one with the greatest ts overall."""
        j = bisect_right(self.ts, t)
        for hi in (j, len(self.rows)):
            k = hi - 1
            while k >= 0 and self.rows[k][1].tgid == not_tgid:
                k -= 1
            if k >= 0:
                ts = self.rows[k][1].ts
                same = [x for x in self.rows[bisect_left(self.ts, ts):hi] if x[1].tgid != not_tgid]
                return min(same, key=lambda x: x[0])[1]
        return None


class _ThreadRows:
    """One thread's off-CPU rows (disjoint, by start) with the running maximum of their ends, to bisect a range."""

    def __init__(self, rows: list[OffCpu]):
        self.rows = rows
        self.starts = [o.ts for o in rows]
        m, ends = 0, []
        for o in rows:
            m = max(m, o.end_ts)
            ends.append(m)
        self.max_end = ends

    def overlapping(self, lo: int, hi: int) -> list[OffCpu]:
        return self.rows[bisect_left(self.max_end, lo):bisect_right(self.starts, hi)]


def _ms(ns: int) -> str:
    return f"{ns / 1e6:.1f} ms"


def _is_local(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


class _Ctx:
    """Per-analysis lookups over the evidence (built once; analysis stays pure)."""

    def __init__(self, ev: Evidence):
        self.ev = ev
        self.reclaim_by_tid: dict[int, list[Reclaim]] = defaultdict(list)
        by_tgid: dict[int, list[Reclaim]] = defaultdict(list)
        by_cpu: dict[int, list[Reclaim]] = defaultdict(list)
        for r in ev.reclaims:
            self.reclaim_by_tid[r.tid].append(r)
            by_tgid[r.tgid].append(r)
            by_cpu[r.cpu].append(r)
        self.reclaim_by_tgid = {k: _ByTime(v) for k, v in by_tgid.items()}
        self.reclaim_by_cpu = {k: _ByTime(v) for k, v in by_cpu.items()}
        self.tgid_of: dict[int, int] = {}
        for rows in ev.offcpu.values():
            for o in rows:
                self.tgid_of[o.tid] = o.tgid
        for rows in ev.syscalls.values():
            for s in rows:
                self.tgid_of[s.tid] = s.tgid
        self._switch_ins: dict[int, list[_SwitchIn]] | None = None
        self._thread_rows: dict[int, _ThreadRows] = {}
        self._calls: dict[tuple[int, int], _Spans] = {}
        self._sock_by_tid: dict[int, _SockIndex] | None = None
        self._sock_by_tuple: dict[tuple, _SockIndex] | None = None
        self._retrans: tuple[dict, dict] | None = None
        self._wake_calls: dict[bool, _Spans] = {}
        self.block_io = _Spans(ev.block_io)
        self._paths: dict[tuple[int, int], tuple[list[int], list]] | None = None
        self._disk_waits: dict[int, _Spans] | None = None
        self.follows = 0          # waker follow-ups run so far: bounded by FOLLOW_BUDGET

    def offcpu_in(self, tid: int, lo: int, hi: int) -> list[OffCpu]:
        """The thread's off-CPU rows overlapping [lo, hi], by bisect on its sorted rows."""
        t = self._thread_rows.get(tid)
        if t is None:
            t = self._thread_rows[tid] = _ThreadRows(self.ev.offcpu.get(tid, []))
        return t.overlapping(lo, hi)

    def socks_of(self, tid: int) -> _SockIndex | None:
        if self._sock_by_tid is None:
            by: dict[int, list[tuple[int, SockIO]]] = defaultdict(list)
            for i, k in enumerate(self.ev.sock_io):
                by[k.tid].append((i, k))
            self._sock_by_tid = {t: _SockIndex(v) for t, v in by.items()}
        return self._sock_by_tid.get(tid)

    def socks_with(self, saddr: str, sport: int, daddr: str, dport: int) -> _SockIndex | None:
        """Socket I/O records of exactly this local -> remote 4-tuple."""
        if self._sock_by_tuple is None:
            by: dict[tuple, list[tuple[int, SockIO]]] = defaultdict(list)
            for i, k in enumerate(self.ev.sock_io):
                by[(k.saddr, k.sport, k.daddr, k.dport)].append((i, k))
            self._sock_by_tuple = {t: _SockIndex(v) for t, v in by.items()}
        return self._sock_by_tuple.get((saddr, sport, daddr, dport))

    def retrans_of(self, sock: SockIO) -> list:
        """Retransmits of this connection (by socket address, or either direction of its 4-tuple), in evidence order."""
        if self._retrans is None:
            by_sk: dict[int, list[int]] = defaultdict(list)
            by_ends: dict[frozenset, list[int]] = defaultdict(list)
            for i, r in enumerate(self.ev.retrans):
                if r.skaddr:
                    by_sk[r.skaddr].append(i)
                by_ends[frozenset({(r.saddr, r.sport), (r.daddr, r.dport)})].append(i)
            self._retrans = (dict(by_sk), dict(by_ends))
        by_sk, by_ends = self._retrans
        idx = set(by_ends.get(frozenset({(sock.saddr, sock.sport), (sock.daddr, sock.dport)}), ()))
        if sock.skaddr:
            idx.update(by_sk.get(sock.skaddr, ()))
        return [self.ev.retrans[i] for i in sorted(idx)]

    def switch_ins(self, cpu: int) -> list[_SwitchIn]:
        """Every recorded switch on ``cpu``, time-ordered.

        Each off-CPU row carries two: the task switched in when the row's thread
        left (its ``preemptor`` fields, whatever the reason; tid 0 is idle), which
        displaced the row's thread, and the row's thread itself when it came back,
        which displaced whoever held the CPU then (``displaced``; -1 when not
        recorded). Unwatched tasks have no rows of their own but still appear as
        the "next" and "prev" tasks of watched ones. Every thread's rows on the
        CPUs waited for count (``Evidence.cpu_rows``), not only the related
        processes': a CPU hog that never blocks shows only in them.
        """
        if self._switch_ins is None:
            by_cpu: dict[int, list[_SwitchIn]] = defaultdict(list)
            make = _SwitchIn._make      # tuple.__new__ in C: a busy window has ~100k switches, the keyword path doubled it
            for rows in [*self.ev.offcpu.values(), self.ev.cpu_rows]:
                for o in rows:
                    by_cpu[o.cpu_off].append(make((o.ts, o.preemptor_tgid, o.preemptor_tid, o.preemptor_comm,
                                                   o.tgid, o.tid, o.comm, 0)))
                    by_cpu[o.cpu_on].append(make((o.end_ts, o.tgid, o.tid, o.comm, o.displaced_tgid,
                                                  o.displaced_tid if o.displaced_tgid or o.displaced_comm else -1,
                                                  o.displaced_comm, o.displaced_since)))
            for v in by_cpu.values():
                v.sort()
            self._switch_ins = dict(by_cpu)
        return self._switch_ins.get(cpu, [])

    def runners(self, cpu: int, a: int, b: int, exclude_tid: int) -> tuple[dict[int, _Holder], list[tuple[int, int]]]:
        """Who held ``cpu`` during [a, b]: ({tgid: holder}, the stretches nobody is known for).

        First by the recorded switches: the task last switched in before a moment
        is taken to be running then (switches between unwatched tasks are not
        recorded, so a process's threads count together), unless the switch that
        ends the stretch displaced another task: switches went on unseen
        meanwhile, and the task holding the CPU at the end (what a run-queue wait
        waited for last) is named instead of one that may have run only briefly at
        the start, for as long as it held the CPU without a break when that is
        known (its ``since``); before that the switch-in rule stands. Idle (tid 0)
        and the waiting thread itself name nobody, nor does a switch older than
        STALE_SWITCH_NS. A stretch left unknown (e.g.
        the CPU was last seen going idle and an unwatched task took it
        unrecorded) goes to the process whose direct reclaim ran on that CPU
        then, for as long as it overlaps: reclaim runs in the task's own context,
        on its CPU. What is still unknown before a displaced task's ``since`` goes
        to that task's process: its other threads, switching among themselves
        unseen, are the likeliest holders (a batch job's workers); recordings
        without ``since`` credit the whole stretch that way.
        """
        out: dict[int, _Holder] = {}
        gaps: list[tuple[int, int, _SwitchIn | None]] = []   # (from, to, the displaced task to fall back on)

        def credit(held: _SwitchIn | None, how: str, fresh: bool, lo: int, hi: int,
                   then: _SwitchIn | None = None) -> None:
            if held is not None and held.tid and held.tid != exclude_tid and fresh:
                out.setdefault(held.tgid, _Holder(0, held.tid, held.comm, how)).ns += hi - lo
            else:
                gaps.append((lo, hi, then))

        cur: _SwitchIn | None = None
        t = a
        ins = self.switch_ins(cpu)
        k = bisect_right(ins, a, key=lambda e: e.ts)      # the entries before are only "who ran at a"
        cur = ins[k - 1] if k else None
        sentinel = _SwitchIn(b, 0, 0, "", 0, -1, "", 0)
        for n in range(k, len(ins) + 1):      # indexed, not a copy of the tail: a busy CPU has thousands
            e = ins[n] if n < len(ins) else sentinel
            if e.ts <= a:
                cur = e
                continue
            end = min(e.ts, b)
            if end > t:
                by_switch_in = cur is not None and t - cur.ts <= STALE_SWITCH_NS
                if (e.ts <= b and e.displaced_tid > 0 and e.displaced_tid != exclude_tid
                        and (cur is None or cur.tid != e.displaced_tid)):
                    # seen holding the CPU at the stretch's end, since e.since when known
                    since = min(max(e.since, t), end) if e.since else t
                    displaced = e.displaced()
                    if since > t:
                        credit(cur, "switch-in", by_switch_in, t, since, then=displaced)
                    if end > since:
                        credit(displaced, "displaced", bool(e.since) or e.ts - t <= STALE_SWITCH_NS, since, end)
                else:
                    credit(cur, "switch-in", by_switch_in, t, end)
            if e.ts >= b:
                break
            cur, t = e, e.ts
        left: list[tuple[int, int]] = []
        for ga, gb, then in gaps:
            per: dict[int, list[tuple[int, int]]] = defaultdict(list)
            who: dict[int, Reclaim] = {}
            on_cpu = self.reclaim_by_cpu.get(cpu)
            for r in on_cpu.overlapping(ga, gb) if on_cpu else ():
                if r.tid != exclude_tid:
                    per[r.tgid].append(_clip(r.ts, r.end_ts, ga, gb))
                    who.setdefault(r.tgid, r)
            cover = {k: _union(v) for k, v in per.items()}
            unknown = [(ga, gb)]
            if cover:
                rt = max(cover, key=lambda k: sum(y - x for x, y in cover[k]))
                out.setdefault(rt, _Holder(0, who[rt].tid, who[rt].comm, "reclaim")).ns += sum(y - x for x, y in cover[rt])
                unknown, t = [], ga
                for x, y in cover[rt]:
                    if x > t:
                        unknown.append((t, x))
                    t = y
                if gb > t:
                    unknown.append((t, gb))
            if then is not None:
                for x, y in unknown:
                    out.setdefault(then.tgid, _Holder(0, then.tid, then.comm, "displaced")).ns += y - x
            else:
                left += unknown
        return out, left

    def comm(self, tgid: int | None, fallback: str | None = None) -> str | None:
        if tgid is None:
            return fallback
        return self.ev.comms.get(tgid) or fallback

    def culprit(self, tgid: int | None, tid: int | None = None, comm: str | None = None) -> Culprit:
        if not tgid:
            return Culprit(None, None, None)
        return Culprit(tgid, self.comm(tgid, comm), tid)

    def syscall_at(self, tid: int, t: int) -> Syscall | None:
        """The syscall the thread was in at time t (the innermost/latest one that started before t)."""
        for k, calls in enumerate((self.ev.syscalls, self.ev.blocked_calls)):   # traced calls first, then read at switch-out
            idx = self._calls.get((k, tid))
            if idx is None:
                idx = self._calls[(k, tid)] = _Spans(calls.get(tid, ()))
            found = idx.containing(t)
            if found:
                return found[-1]
        return None

    def infer_waker(self, o: OffCpu, wait_call: str) -> Syscall | None:
        """The other thread's wake-type syscall that brackets o's wake time (see fetch.unknown_wakes).

        The shortest bracketing call wins: a futex wake or pipe write takes
        microseconds, while another waiter's call spans the whole wait.
        """
        if not o.wake_ts:
            return None
        futex = wait_call == "futex"
        idx = self._wake_calls.get(futex)
        if idx is None:
            want = {"futex"} if futex else set(WAKER_CALLS) - {"futex"}
            idx = self._wake_calls[futex] = _Spans(s for rows in self.ev.syscalls.values() for s in rows
                                                   if s.syscall in want)
        best = None
        for s in idx.containing(o.wake_ts, WAKE_EPS_NS):
            if s.tid != o.tid and s.end_ts > o.ts and (best is None or s.end_ts - s.ts < best.end_ts - best.ts):
                best = s
        return best

    def sock_for(self, s: Syscall) -> SockIO | None:
        """The socket a syscall moved data on: the sock_io record the same thread emitted during it."""
        mine = self.socks_of(s.tid)
        if mine is None:
            return None
        # the first (in evidence order) emitted during the call; else, a blocking recv that returned
        # nothing yet (timed out): the last socket this thread used before it ended, not the reply it
        # wrote on another socket right after (a 504 to its own client); else one just after the call
        return (mine.first_between(s.ts, s.end_ts) or mine.last_until(s.end_ts)
                or mine.first_between(s.ts, s.end_ts + 1_000_000))

    def path_for(self, tgid: int, fd: int, t: int) -> str | None:
        """The path the process's fd named at t: its latest open (or close: '') at or before t."""
        if self._paths is None:
            by: dict[tuple[int, int], list] = defaultdict(list)
            for f in self.ev.fd_open:          # by ts already: the latest one at or before t wins, as in a scan
                by[(f.tgid, f.fd)].append(f)
            self._paths = {k: ([f.ts for f in v], v) for k, v in by.items()}
        got = self._paths.get((tgid, fd))
        if got is None:
            return None
        k = bisect_right(got[0], t)
        # '' after a close: the number was reused for something unopened (pipe, socket)
        return (got[1][k - 1].path or None) if k else None

    def disk_waits_on(self, dev: int) -> _Spans:
        """Every process's sync calls on ``dev`` in the window (a ledger syncing per request makes thousands)."""
        if self._disk_waits is None:
            by: dict[int, list[Syscall]] = defaultdict(list)
            for s in self.ev.disk_waits:
                by[s.dev].append(s)
            self._disk_waits = {d: _Spans(v) for d, v in by.items()}
        return self._disk_waits.get(dev) or _Spans(())

    def top_reclaimer(self, exclude: int | None, own: Iterable[Reclaim] = ()) -> tuple[Culprit, dict]:
        """The process that reclaimed most around the window (system-wide): the likeliest memory hog.

        The stall itself may be the victim's alone (the hog filled memory just
        before, or is throttled on writeback meanwhile), so reclaim by others is
        looked for over the whole analysis window plus RECLAIM_CONTEXT_NS before it.
        When the victim's own stalls (``own``) were memcg reclaim, only tasks of
        that memory cgroup can have filled it: reclaim elsewhere (another memcg, an
        earlier occupant of a re-created one) is someone else's problem.
        """
        totals = self.ev.reclaim_totals
        if totals is None:
            iv = self.ev.interval
            totals = reclaim_totals(self.ev.reclaims, iv.start_ns - RECLAIM_CONTEXT_NS, iv.end_ns)
        memcgs = {r.memcg for r in own if r.kind == "memcg" and r.memcg}
        per: dict[int, list[int]] = defaultdict(lambda: [0, 0])
        for t in totals:
            if not memcgs or t.memcg in memcgs:
                per[t.tgid][0] += t.stall_ns
                per[t.tgid][1] += t.pages
        ranked = sorted(per.items(), key=lambda kv: (kv[1][1], kv[1][0], -kv[0]), reverse=True)
        ev = {"top_reclaimers": [{"reclaimer": t, "comm": self.comm(t), "stall_ns": v[0], "pages": v[1]}
                                 for t, v in ranked[:3]]}
        members = self.members(memcgs, exclude, ev) if memcgs else []
        for t, _ in ranked:
            if t != exclude:
                return self.culprit(t), ev
        if members:
            return self.culprit(members[0].tgid, None, members[0].comm), ev
        return Culprit(None, None, None), ev

    def members(self, memcgs: set[int], exclude: int | None, ev: dict) -> list[MemcgMember]:
        """The other members of the victim's memcg, most memory held first; the cgroup's state goes in ``ev``.

        Reclaim by another member is the stronger evidence of who fills the cgroup
        (it was charging it then), so the top member is the culprit only when no one
        else reclaimed: a hog that filled the cgroup and now idles or waits for its
        writeback never does. Each member counts with its largest snapshot in the
        window (agent/memcg_members.py).
        """
        best: dict[int, MemcgMember] = {}
        state: MemcgMember | None = None
        for m in self.ev.memcg_members:
            if m.memcg not in memcgs:
                continue
            if state is None or m.memcg_usage >= state.memcg_usage:
                state = m
            if m.tgid and m.tgid != exclude and (m.tgid not in best or m.held_bytes > best[m.tgid].held_bytes):
                best[m.tgid] = m
        if state is None:
            return []
        ranked = sorted(best.values(), key=lambda m: (m.held_bytes, -m.tgid), reverse=True)
        ev["memcg"] = {"cgroup": state.cgroup or str(state.memcg), "usage_bytes": state.memcg_usage,
                       "limit_bytes": state.memcg_limit, "file_bytes": state.memcg_file,
                       "dirty_bytes": state.memcg_dirty, "writeback_bytes": state.memcg_writeback}
        ev["top_members"] = [{"member": m.tgid, "comm": m.comm, "held_bytes": m.held_bytes,
                              "anon_bytes": m.rss_anon, "file_io_bytes": m.io_bytes} for m in ranked[:3]]
        return ranked


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB"


def _memcg_note(top: dict) -> str:
    """What the member snapshot says of a full memcg, for the one-line summary (empty without one)."""
    cg, members = top.get("memcg"), top.get("top_members")
    if not cg:
        return ""
    limit = f"/{_mib(cg['limit_bytes'])}" if cg["limit_bytes"] else ""
    out = f": memcg {cg['cgroup']} at {_mib(cg['usage_bytes'])}{limit}"
    if cg["dirty_bytes"] + cg["writeback_bytes"]:
        out += f", {_mib(cg['dirty_bytes'])} dirty and {_mib(cg['writeback_bytes'])} under writeback"
    if members:
        out += f"; {members[0]['comm']} PID {members[0]['member']} holds ~{_mib(members[0]['held_bytes'])}"
    return out


def _reclaim_child(ctx: _Ctx, rows: _ByTime | None, segs: list[tuple[int, int]], culprit: Culprit,
                   what: str) -> Cause | None:
    """memory_pressure explaining ``segs`` (run-queue waits) by reclaim that ran during them."""
    total, n, pages = rows.overlap_totals(segs) if rows is not None else (0, 0, 0)
    if total < MIN_CAUSE_NS:
        return None
    return Cause("memory_pressure", culprit, total,
                 evidence=[f"{what}: {n} reclaim stalls, {pages} pages reclaimed, {_ms(total)} overlapping the wait"],
                 summary=f"{culprit.label()} direct reclaim")


def _explain_blocked(ctx: _Ctx, o: OffCpu, a: int, b: int, depth: int, path: frozenset[int]) -> _Piece:
    """Why the thread was blocked over [a, b] (clipped part of off-CPU interval o)."""
    tid, tgid, d = o.tid, o.tgid, b - a
    sc = ctx.syscall_at(tid, o.ts) or ctx.syscall_at(tid, a)
    name = sc.syscall if sc else ""
    ev: list = [{"syscall": name or None, "fd": sc.fd if sc and sc.fd >= 0 else None, "reason": o.reason,
                 "off_ns": o.ts, "wake_ns": o.wake_ts, "blocked_ns": d,
                 "waker": {"pid": o.waker_tgid, "tid": o.waker_tid, "comm": o.waker_comm} if o.waker_tid else None}]
    if o.waker_tgid == 0 and o.wake_ts and name not in SLEEP_CALLS and (w := ctx.infer_waker(o, name)):
        # woken via IPI on an idle CPU: the kernel named the idle task; the waker's own syscall names the real one
        o = replace(o, waker_tgid=w.tgid, waker_tid=w.tid, waker_comm=ctx.comm(w.tgid) or "")
        ev.append({"waker_inferred_from": {"pid": w.tgid, "tid": w.tid, "syscall": w.syscall, "ts": w.ts}})
    other_waker = bool(o.waker_tid) and o.waker_tid != tid and o.waker_tgid != 0
    waker = ctx.culprit(o.waker_tgid, o.waker_tid, o.waker_comm) if other_waker else Culprit(None, None, None)

    def follow(piece: _Piece) -> _Piece:
        if other_waker:
            piece.follow, piece.seg = o.waker_tid, (a, b)
        return piece

    # a stall inside the thread's own direct reclaim: memory pressure, whatever the syscall
    mine = [r for r in ctx.reclaim_by_tid.get(tid, ()) if _overlap(r.ts, r.end_ts, a, b) > 0]
    own = sum(_overlap(r.ts, r.end_ts, a, b) for r in mine)
    if own * 2 >= d:
        cul, top = ctx.top_reclaimer(exclude=tgid, own=mine)
        kind = "memcg" if any(r.kind == "memcg" for r in mine) else "direct"
        return _Piece("memory_pressure", cul, d, ev + [{"own_reclaim_ns": own, "reclaim": kind, **top}],
                      summary=f"blocked in {kind} reclaim" + _memcg_note(top))

    if name in SLEEP_CALLS:
        return _Piece("sleep", ctx.culprit(tgid, tid), d, ev, summary=f"{name}")
    if name in FILE_LOCK_CALLS or name in SEM_CALLS or (name in MMAP_LOCK_CALLS and o.reason == "uninterruptible"):
        what, lock = _lock_identity(ctx, name, sc, tgid)
        if other_waker:
            return follow(_Piece("lock_contention", waker, d, ev + [{"lock": lock}], summary=what))
        return _Piece("lock_contention", Culprit(None, None, None), d, ev + [{"lock": lock}],
                      summary=f"{what}, holder not seen (woken by a timeout or a signal?)")
    if name == "futex":
        if other_waker:
            return follow(_Piece("lock_contention", waker, d, ev, summary="futex", bucket="futex"))
        return _Piece("sleep", ctx.culprit(tgid, tid), d, ev, summary="futex wait timed out", bucket="futex")
    if name in DISK_CALLS or (o.reason == "uninterruptible" and name in READ_CALLS | WRITE_CALLS | {""}):
        ios = ctx.block_io.overlapping(a, b)
        if not name and ios and not _kernel_thread(o.comm):
            # a user thread sleeping in the kernel outside any syscall is in an exception: a page fault,
            # waiting for the page to be read from disk (a file-backed page not in the page cache, or swap-in)
            cul, io_ev = _disk_culprit(ctx, ios, tgid, tid, o.wake_ts or b, waited_read=True)
            faults = sum(f.count for f in ctx.ev.faults if f.tid == tid and a - 1_000_000_000 <= f.ts <= b)
            return _Piece("major_fault", cul, d, ev + io_ev + [{"page_faults_near": faults}],
                          summary="page fault waiting for a disk read (major fault: a file-backed page not in "
                                  "the page cache, or swap-in)", bucket="io")
        if (name in READ_CALLS | WRITE_CALLS and other_waker and o.wake_ts
                and not _kernel_thread(o.waker_comm or "") and not _completion_near(ios, o.wake_ts, tgid)):
            # no disk request completed when it was woken, and a user thread woke it: that thread released
            # a kernel lock the call needed (the file's inode lock, held through another write or read)
            what = f"{name} fd={sc.fd}" if sc and sc.fd >= 0 else name
            path = ctx.path_for(tgid, sc.fd, sc.ts) if sc and sc.fd >= 0 else None
            return follow(_Piece("lock_contention", waker, d, ev + [{"lock": {"type": "inode_lock", "path": path,
                                                                             "fd": sc.fd if sc else None}}],
                                 summary=f"inode lock of {path or 'the file'}, in {what}"))
        if ios or name in DISK_CALLS or name:
            cul, io_ev = _disk_culprit(ctx, ios, tgid, tid, o.wake_ts or b, sc.dev if sc else 0,
                                       start=sc.ts if sc and name in DISK_CALLS else 0)
            label = f"{name} fd={sc.fd}" if sc and sc.fd >= 0 else (name or "uninterruptible wait")
            if sc and sc.fd >= 0 and (p := ctx.path_for(tgid, sc.fd, sc.ts)):
                label += f" ({p})"
            return _Piece("disk_io", cul, d, ev + io_ev, summary=label, bucket="io")
    sock = ctx.sock_for(sc) if sc and (name in SOCK_CALLS or name in READ_CALLS | WRITE_CALLS) else None
    if sc and sock is not None:
        return _explain_socket(ctx, o, sc, sock, a, b, d, ev, waker, depth, path)
    if name in READ_CALLS | WRITE_CALLS | MUX_CALLS and other_waker:
        # no file path here: a regular file never blocks until another process acts, so a path would be stale
        what = f"{name} fd={sc.fd}" if sc and sc.fd >= 0 else name
        return follow(_Piece("remote_service", waker, d, ev, summary=f"waited in {what} (IPC)"))
    if name in MUX_CALLS:
        return _Piece("sleep", ctx.culprit(tgid, tid), d, ev, summary=f"idle in {name}")
    if other_waker:
        return follow(_Piece("unknown", waker, d, ev,
                             summary=f"blocked in {name or 'an untraced call'}, woken by {waker.label()}"))
    return _Piece("unknown", Culprit(None, None, None), d, ev,
                  summary=f"blocked ({o.reason}) in {name or 'an untraced call'}")


def _lock_identity(ctx: _Ctx, name: str, sc: Syscall | None, tgid: int) -> tuple[str, dict]:
    """The lock a thread waited for, in words and as evidence: the file (path from the process's opens of
    that fd) for flock/fcntl, the SysV semaphore set id for semop, the process's mmap lock otherwise.

    flock and fcntl sleep only in a blocking lock request (LOCK_EX/LOCK_SH without LOCK_NB, F_SETLKW,
    F_OFD_SETLKW), and whoever releases the lock wakes the waiter: the waker is the holder.
    """
    arg = sc.fd if sc is not None else -1
    if name in FILE_LOCK_CALLS:
        path = ctx.path_for(tgid, arg, sc.ts) if sc is not None and arg >= 0 else None
        lock = {"type": name, "fd": arg if arg >= 0 else None, "path": path}
        return f"{FILE_LOCK_CALLS[name]} on {path or f'fd {arg}'}", lock
    if name in SEM_CALLS:
        return f"SysV semaphore (semid {arg})", {"type": "semaphore", "semid": arg if arg >= 0 else None}
    return f"mmap lock of PID {tgid} (in {name})", {"type": "mmap_lock", "pid": tgid, "syscall": name}


KERNEL_IO_THREADS = ("kworker/", "jbd2/", "loop", "kswapd", "kcompactd", "ksoftirqd/", "kblockd", "flush-",
                     "writeback", "dm_", "kdmflush", "md", "xfsaild", "btrfs-", "scsi_", "nvme", "swapper")


COMPLETION_NEAR_NS = 2_000_000   # a disk wait ends within this of a request's completion (block rows are ms sums)


def _completion_near(ios: list[BlockIO], wake: int, tgid: int) -> bool:
    """Whether a request of the waiter (or of a kernel thread, issuing for it) completed when it woke: on a
    busy host some request always completes near any moment, but not one the waiter was waiting for."""
    return any(abs(x.end_ts - wake) <= COMPLETION_NEAR_NS and (x.tgid == tgid or _kernel_thread(x.comm))
               for x in ios)


def _kernel_thread(comm: str) -> bool:
    """Block requests dispatched by these (throttling, writeback, journal, loop) belong to someone else."""
    return comm.startswith(KERNEL_IO_THREADS)


def _disk_culprit(ctx: _Ctx, ios: list[BlockIO], tgid: int, tid: int, wake: int,
                  synced_dev: int = 0, waited_read: bool = False, start: int = 0) -> tuple[Culprit, list]:
    """Who made the wait long: the process that issued most bytes to the waited-on device during the wait.

    The device is the synced file's (an fsync row carries it) when that device had requests;
    otherwise the one whose request completed closest before the wake-up (the completion that
    ended the wait; other devices' I/O is unrelated). The file's device is needed on a busy host:
    fast requests are summed per second, so a sum that ends after the wake-up hides the
    completion that ended it, and another disk's busier traffic looks closer. Kernel
    threads (throttle dispatch, writeback, journal, loop) issue on behalf of the
    processes that wrote, so their bytes never make them the culprit: if no other
    user process issued more than the waiter on that device, the waiter's own I/O
    is what was slow and the waiter is named (the evidence lists the issuers), unless another process's
    sync call on that device was waiting before it and until it woke (``_synced_ahead``). A page fault
    (``waited_read``) waits for a read: only reads place it on a device, so a busy writer's
    completions on another disk (a loop device's backing disk, the root disk) do not.
    """
    placing = [x for x in ios if "R" in x.rwbs] if waited_read else ios
    placing = placing or ios
    done = [x for x in placing if x.end_ts <= wake] or placing
    dev = min(done, key=lambda x: abs(wake - x.end_ts)).dev if done else None
    if synced_dev and any(x.dev == synced_dev for x in ios):
        dev = synced_dev
    on_dev = [x for x in ios if x.dev == dev]
    per: dict[int, int] = defaultdict(int)
    comm: dict[int, str] = {}
    for x in on_dev:
        per[x.tgid] += x.bytes
        comm[x.tgid] = x.comm
    ev = [{"block_io": len(on_dev), "bytes": sum(per.values()), "dev": dev,
           "issuers": [{"pid": t, "comm": comm[t], "bytes": n} for t, n in
                       sorted(per.items(), key=lambda kv: kv[1], reverse=True)[:3]]}]
    users = {t: n for t, n in per.items() if not _kernel_thread(comm[t])}
    top, n = max(users.items(), key=lambda kv: kv[1]) if users else (tgid, 0)
    if top == tgid or n <= users.get(tgid, 0):
        if (ahead := _synced_ahead(ctx, tgid, dev, start, wake)) is not None:
            ev.append({"queued_behind": {"pid": ahead.tgid, "tid": ahead.tid, "syscall": ahead.syscall,
                                         "since_ns": ahead.ts, "until_ns": ahead.end_ts}})
            return ctx.culprit(ahead.tgid, ahead.tid), ev
        return ctx.culprit(tgid, tid), ev
    return ctx.culprit(top, None, comm[top]), ev


def _synced_ahead(ctx: _Ctx, tgid: int, dev: int | None, start: int, wake: int) -> Syscall | None:
    """Another process's sync call on the same device that was already waiting when this wait began and
    lasted until it ended: the waiter's requests queued behind its writes. Named where the block rows show
    no heavier user issuer, i.e. where its requests were dispatched by kernel threads (a blkio throttle's
    kworker, writeback) that the rows name instead; the earliest such call is the head of the queue."""
    if not dev or not start:
        return None
    ahead = [s for s in ctx.disk_waits_on(dev).containing(start)
             if s.tgid != tgid and s.ts < start and s.end_ts >= wake - COMPLETION_NEAR_NS]
    return min(ahead, key=lambda s: (s.ts, s.tid)) if ahead else None


def _explain_socket(ctx: _Ctx, o: OffCpu, sc: Syscall, sock: SockIO, a: int, b: int, d: int, ev: list,
                    waker: Culprit, depth: int, path: frozenset[int]) -> _Piece:
    tup = f"{sock.saddr}:{sock.sport} -> {sock.daddr}:{sock.dport}"
    ev = ev + [{"socket": tup}]
    rt = ctx.retrans_of(sock)
    if rt:
        cul, sender = _retransmitter(ctx, sock, rt)
        return _Piece("network", cul, d, ev + [{"retransmits": len(rt), "retransmitted_by": sender,
                                               "first_retransmit_ns": rt[0].ts}],
                      summary=f"{len(rt)} TCP retransmit{'s' if len(rt) > 1 else ''} (segments lost) on {tup}, "
                              f"sent by {cul.label() + ' ' if cul.pid else ''}{sender}", bucket="net")
    peers = ctx.socks_with(sock.daddr, sock.dport, sock.saddr, sock.sport)
    p = peers.latest_until(o.wake_ts or b, sock.tgid) if peers is not None else None
    if p is not None:
        # the peer thread that sent last before the wake-up is the one we waited for
        cul = ctx.culprit(p.tgid, p.tid)
        piece = _Piece("remote_service", cul, d, ev, summary=f"waited in {sc.syscall} on {tup} for {cul.label()}",
                       bucket="net")
        piece.follow = o.waker_tid if (o.waker_tgid == p.tgid and o.waker_tid) else p.tid
        piece.seg = (a, b)
        return piece
    if _is_local(sock.daddr) and waker.pid is not None:
        piece = _Piece("remote_service", waker, d, ev, summary=f"waited in {sc.syscall} on {tup}", bucket="net")
        piece.follow, piece.seg = o.waker_tid, (a, b)
        return piece
    return _Piece("remote_service", Culprit(None, None, None), d, ev,
                  summary=f"waited in {sc.syscall} on remote {sock.daddr}:{sock.dport}", bucket="net")


def _retransmitter(ctx: _Ctx, sock: SockIO, rt: list) -> tuple[Culprit, str]:
    """The process owning the end that retransmitted (whose segments were lost), and that end as text.

    A retransmit record carries the sending socket's own 4-tuple, so the loss
    direction is known: the victim's end means its requests were lost, the
    peer's end means the replies were. The owner comes from the socket I/O of
    that exact 4-tuple; a peer that was not watched stays unnamed.
    """
    r = max(rt, key=lambda x: sum(1 for y in rt if (y.saddr, y.sport) == (x.saddr, x.sport)))
    end = f"{r.saddr}:{r.sport}"
    if (r.saddr, r.sport) == (sock.saddr, sock.sport):
        return ctx.culprit(sock.tgid, sock.tid), end
    for k in ctx.ev.sock_io:
        if (k.saddr, k.sport, k.daddr, k.dport) == (r.saddr, r.sport, r.daddr, r.dport):
            return ctx.culprit(k.tgid, k.tid), end
    return Culprit(None, None, None), end


FOLLOW_BUDGET = 256     # waker follow-ups per analysis: each reads the waker's rows once for all its waits


def _follow_grouped(ctx: _Ctx, pieces: list[_Piece], depth: int, path: frozenset[int]) -> None:
    """Explain the pieces that wait for another thread by that thread's own delays, once per cause.

    Pieces that will merge into one cause (same kind and culprit) and wait for the
    same thread are followed together, over the union of their waits: a client
    that made a thousand calls to one server thread costs one follow-up of that
    thread, not a thousand (the old per-wait recursion made a busy window's
    answer take tens of seconds). The children go to the first piece of the
    group; aggregation merges the group into one cause with them.
    """
    groups: dict[tuple, list[_Piece]] = {}
    for p in pieces:
        if p.follow:
            groups.setdefault((*_key(p.kind, p.culprit), p.follow), []).append(p)
    for key, ps in groups.items():
        ps[0].children = _follow_waker(ctx, key[-1], _union([p.seg for p in ps]), depth, path, ps[0].evidence)


def _follow_waker(ctx: _Ctx, waker_tid: int, segs: list[tuple[int, int]], depth: int, path: frozenset[int],
                  evidence: list) -> list[Cause]:
    """The waker's own delays inside ``segs``, as child causes (sleeps excluded: they are the waker's own work)."""
    if ctx.follows >= FOLLOW_BUDGET:
        evidence.append(f"fan-out budget of {FOLLOW_BUDGET} waker follow-ups reached at tid {waker_tid}")
        if f"waker follow-ups: budget {FOLLOW_BUDGET}" not in ctx.ev.truncated:
            ctx.ev.truncated.append(f"waker follow-ups: budget {FOLLOW_BUDGET}")
        return []
    if depth + 1 >= MAX_DEPTH:
        evidence.append(f"depth limit {MAX_DEPTH} reached at tid {waker_tid}")
        return []
    if waker_tid in path:
        evidence.append(f"cycle: tid {waker_tid} already on the wait chain")
        return []
    if waker_tid not in ctx.ev.offcpu and waker_tid not in ctx.reclaim_by_tid:
        evidence.append(f"no off-CPU records for waker tid {waker_tid} (not watched?)")
        return []
    ctx.follows += 1
    _, causes, _ = _thread_causes(ctx, waker_tid, segs, depth + 1, path)
    return [c for c in causes if c.kind != "sleep" and not (c.kind == "unknown" and c.culprit.pid is None)]


def _segments_rows(ctx: _Ctx, tid: int, segs: list[tuple[int, int]]):
    """(row, seg start, seg end) for each of the thread's off-CPU rows overlapping each segment, in time order."""
    for lo, hi in segs:
        for o in ctx.offcpu_in(tid, lo, hi):
            yield o, lo, hi


def _ns_per_cpu(pairs: Iterable[tuple[int, int]]) -> dict[int, int]:
    """(cpu, ns) pairs summed per CPU, in the order the CPUs first appear (ties go to the first)."""
    cpus: dict[int, int] = defaultdict(int)
    for cpu, ns in pairs:
        cpus[cpu] += ns
    return cpus


def _cpus_json(cpus: dict[int, int]) -> dict[str, int]:
    return {str(c): n for c, n in sorted(cpus.items())}


def _share(shares: dict[tuple[int, int, int], PreemptorShare], runq_segs: dict[int, list[tuple[int, int]]],
           tgid: int, tid: int, comm: str, cpu: int, ns: int, seg: tuple[int, int]) -> None:
    """Credit ``ns`` of run-queue wait on ``cpu`` to the task that held it (a preemptor), over ``seg``."""
    s = shares.setdefault((tgid, tid, cpu), PreemptorShare(tgid, tid, comm, cpu, 0, 0))
    s.runq_ns += ns
    s.count += 1
    runq_segs[tgid].append(seg)


def _cpu_holder(ctx: _Ctx, tgid: int, tid: int, comm: str, cpus: dict[int, int], segs: list[tuple[int, int]],
                summary: str, evidence: dict, child_note: str, cap_child: bool = False) -> _Piece:
    """One ``cpu_preemption`` cause: process ``tgid`` held the CPU the thread waited for, ``cpus`` ns per CPU.

    It is named by its thread that held the CPU longest (``tid``, ``comm``) and placed on the CPU
    waited for most (``{cpu}`` in ``summary``). Its own reclaim over ``segs`` becomes a child
    (``{culprit}`` in ``child_note``): memory pressure is why it kept the CPU. ``cap_child``: the
    child explains no more than the wait (parallel reclaimers overlap each other).
    """
    total = sum(cpus.values())
    cpu = max(cpus.items(), key=lambda kv: kv[1])[0]
    cul = ctx.culprit(tgid, tid, comm)
    piece = _Piece("cpu_preemption", cul, total, cpu=cpu, summary=summary.format(cpu=cpu), evidence=[evidence])
    child = _reclaim_child(ctx, ctx.reclaim_by_tgid.get(tgid), segs, cul, child_note.format(culprit=cul.label()))
    if child:
        if cap_child:
            child.delay_ns = min(child.delay_ns, total)
        piece.children.append(child)
    return piece


def _thread_causes(ctx: _Ctx, tid: int, window: list[tuple[int, int]], depth: int,
                   path: frozenset[int], follow: bool = True) -> tuple[Breakdown, list[Cause], list[OffCpu]]:
    """Breakdown and ranked causes for one thread over the disjoint, sorted segments ``window``
    (the window itself for the victim; the union of the waits for it when it is a waker)."""
    path = path | {tid}
    pieces: list[_Piece] = []
    runq = blocked = io = net = futex = 0
    by_reason: dict[str, int] = defaultdict(int)
    shares: dict[tuple[int, int, int], PreemptorShare] = {}
    runq_segs: dict[int, list[tuple[int, int]]] = defaultdict(list)   # preemptor tgid -> segments
    unknown_runq: list[tuple[int, int, int]] = []                     # (a, b, cpu) waits after wake-up
    named: dict[int, list[_HeldStretch]] = defaultdict(list)  # tgid -> the waits it held the CPU in
    moved: _Moved | None = None          # the thread was moved off its CPU: the move, while it stays on the new one
    after_move: list[tuple[int, int, int, _Moved]] = []                # (a, b, cpu) waits on the CPU it was moved to
    used: list[OffCpu] = []
    preempted_waits: list[tuple[int, int]] = []       # (a, b) of the preempted waits that ended in the window
    tgid = ctx.tgid_of.get(tid, tid)
    queued_move = _placement_move(list(dict.fromkeys(o for o, _, _ in _segments_rows(ctx, tid, window))))

    def account_blocked(o: OffCpu, lo: int, hi: int, wake: int) -> None:
        """The blocked part of an off-CPU row (leaving to wake-up, inside the segment) and its cause."""
        nonlocal blocked, io, net, futex
        ba, bb = _clip(o.ts, wake, lo, hi)
        if bb <= ba:
            return
        blocked += bb - ba
        by_reason[o.reason or "other"] += bb - ba
        p = _explain_blocked(ctx, o, ba, bb, depth, path)
        pieces.append(p)
        io += (bb - ba) if p.bucket == "io" else 0
        net += (bb - ba) if p.bucket == "net" else 0
        futex += (bb - ba) if p.bucket == "futex" else 0

    for o, lo, hi in _segments_rows(ctx, tid, window):
        a0, b0 = _clip(o.ts, o.end_ts, lo, hi)
        if b0 <= a0:
            continue
        used.append(o)
        moved = _track_move(moved, o, queued_move)
        if moved is not None and o.cpu_on == moved.to_cpu:
            wake = o.end_ts if o.reason == "preempted" else (o.wake_ts or o.end_ts)
            if o.reason != "preempted":
                account_blocked(o, lo, hi, wake)
                ra, rb = _clip(wake, o.end_ts, lo, hi)
            else:
                ra, rb = a0, b0
            if rb > ra:
                runq += rb - ra
                after_move.append((ra, rb, o.cpu_on, moved))
            continue
        if o.reason == "preempted":
            rq = [(a0, b0)]
            if b0 == o.end_ts:         # it came back inside the window: when it came back says what it waited for
                preempted_waits.append((a0, b0))
        else:
            wake = o.wake_ts if o.wake_ts else o.end_ts
            account_blocked(o, lo, hi, wake)
            rq = [_clip(wake, o.end_ts, lo, hi)]
        for ra, rb in rq:
            if rb <= ra:
                continue
            runq += rb - ra
            if (o.reason == "preempted" and o.preemptor_tid and o.cpu_on == o.cpu_off
                    and rb - ra >= LONG_PREEMPTED_NS):
                # a long preempted wait: whoever cut in at the switch-out may have run a moment and left the CPU
                # to a task that never blocks (a real-time job), seen only in other threads' switches there:
                # each task that held the CPU meanwhile is a preemptor for the part it held; the part no switch
                # says anything about stays the one that cut in
                held, left = ctx.runners(o.cpu_on, ra, rb, tid)
                for rt, h in held.items():
                    _share(shares, runq_segs, rt, h.tid, h.comm, o.cpu_on, h.ns, (ra, rb))
                for x, y in left:
                    _share(shares, runq_segs, o.preemptor_tgid, o.preemptor_tid, o.preemptor_comm, o.cpu_off, y - x,
                           (x, y))
                continue
            if o.reason == "preempted" and o.preemptor_tid:
                if (cut := _held_at_return(o, ra, rb, tid)) is not None:
                    # another task held the CPU without a break from ``cut`` until the thread came back: that part
                    # of the wait was behind it, not behind the task that cut in at the switch-out
                    named[o.displaced_tgid].append(_HeldStretch(cut, rb, o.displaced_tid, o.displaced_comm, rb - cut,
                                                                o.cpu_on, "displaced"))
                    rb = cut
                key = (o.preemptor_tgid, o.preemptor_tid, o.cpu_off)
                s = shares.setdefault(key, PreemptorShare(o.preemptor_tgid, o.preemptor_tid, o.preemptor_comm,
                                                          o.cpu_off, 0, 0))
                s.runq_ns += rb - ra
                s.count += 1
                runq_segs[o.preemptor_tgid].append((ra, rb))
            else:
                unknown_runq.append((ra, rb, o.cpu_on))

    # preemption, one cause per preemptor process
    per_tgid: dict[int, list[PreemptorShare]] = defaultdict(list)
    for s in shares.values():
        per_tgid[s.pid].append(s)
    for ptgid, ss in per_tgid.items():
        cpus = _ns_per_cpu((s.cpu, s.runq_ns) for s in ss)
        top = max(ss, key=lambda s: s.runq_ns)
        pieces.append(_cpu_holder(
            ctx, ptgid, top.tid, top.comm, cpus, runq_segs[ptgid], "preempted on CPU {cpu}",
            {"preemptions": sum(s.count for s in ss), "runq_ns": sum(cpus.values()), "cpus": _cpus_json(cpus)},
            "preemptor {culprit} in reclaim"))
    # run-queue waits after a wake-up: name whoever held that CPU meanwhile
    rest: list[tuple[int, int, int]] = []
    for a, b, c in unknown_runq:
        held, left = ctx.runners(c, a, b, tid)
        for rt, h in held.items():
            named[rt].append(_HeldStretch(a, b, h.tid, h.comm, h.ns, c, h.how))
        rest.extend((x, y, c) for x, y in left)
    for rt, segs in named.items():
        cpus = _ns_per_cpu((s.cpu, s.ns) for s in segs)
        top = max(segs, key=lambda s: s.ns)
        pieces.append(_cpu_holder(
            ctx, rt, top.tid, top.comm, cpus, [(s.a, s.b) for s in segs], "run queue after wake-up on CPU {cpu}",
            {"wakeup_latency_ns": sum(cpus.values()), "waits": len(segs), "cpus": _cpus_json(cpus),
             "held_cpu_by": sorted({s.how for s in segs})},
            "{culprit} in reclaim while holding the CPU", cap_child=True))
    pieces.extend(_migration_pieces(ctx, tid, after_move))
    if rest:
        total = sum(b - a for a, b, _ in rest)
        piece = _Piece("cpu_preemption", Culprit(None, None, None), total,
                       summary="waited for a CPU (after wake-up, or no preemptor recorded)",
                       evidence=[{"wakeup_latency_ns": total, "waits": len(rest)}])
        pieces.append(piece)
    lo, hi = window[0][0], window[-1][1]
    if runq and (thr := _throttling(ctx, tgid, window, runq, preempted_waits)) is not None:
        pieces = _take_throttled(pieces, thr, runq)
    pieces = _interrupts(ctx, used, window, pieces)

    # the thread's own direct reclaim (on or off CPU) is memory pressure
    own = [r for r in ctx.reclaim_by_tid.get(tid, ()) if any(_overlap(r.ts, r.end_ts, a, b) > 0 for a, b in window)]
    reclaim_ns = sum(_overlap(r.ts, r.end_ts, a, b) for r in own for a, b in window)
    if reclaim_ns:
        cul, top = ctx.top_reclaimer(exclude=tgid, own=own)
        in_blocked = sum(p.delay_ns for p in pieces if p.kind == "memory_pressure" and not p.children)
        extra = max(0, reclaim_ns - in_blocked)
        if extra:
            pieces.append(_Piece("memory_pressure", cul, extra, summary="direct reclaim in the victim",
                                 evidence=[{"own_reclaim_stalls": len(own), "own_reclaim_ns": reclaim_ns,
                                            "pages": sum(r.nr_reclaimed for r in own), **top}]))

    if follow:
        _follow_grouped(ctx, pieces, depth, path)
    wall = sum(b - a for a, b in window)
    used = list(dict.fromkeys(used))       # a row spanning two segments was used twice
    bd = Breakdown(
        tid=tid, wall_ns=wall, on_cpu_ns=max(0, wall - runq - blocked), runq_ns=runq, blocked_ns=blocked,
        blocked_by_reason=dict(by_reason),
        runq_by_preemptor=sorted(shares.values(), key=lambda s: s.runq_ns, reverse=True),
        reclaim_ns=reclaim_ns,
        fault_count=sum(f.count for f in ctx.ev.faults if f.tid == tid and lo <= f.ts <= hi
                        and any(a <= f.ts <= b for a, b in window)),
        io_ns=io, net_ns=net, futex_ns=futex, offcpu_intervals=len(used),
    )
    return bd, _aggregate(pieces), used




THROTTLE_MEMBER_CONTEXT_NS = 2_000_000_000


def _interp(samples: list[tuple[int, int]], t: int) -> float:
    """A cumulative counter at time t, linear between the samples around it, held flat beyond them."""
    if t <= samples[0][0]:
        return samples[0][1]
    if t >= samples[-1][0]:
        return samples[-1][1]
    k = bisect_right(samples, t, key=lambda x: x[0])
    (t0, v0), (t1, v1) = samples[k - 1], samples[k]
    return v0 + (v1 - v0) * (t - t0) / (t1 - t0) if t1 > t0 else v1


PHASE_TOL_NS = 4_000_000      # a throttled task comes back this close after its group's period timer
PHASE_MIN_WAITS = 3           # that many waits ending at one phase of the period: the group's throttling
PHASE_MIN_WAIT_NS = 1_000_000


def _period_waits(waits: list[tuple[int, int]], period_ns: int) -> list[tuple[int, int]]:
    """Of the thread's preempted waits, those that ended at one phase of ``period_ns`` (the largest such set).

    A throttled task is runnable but off its CPU until the group's period timer refills the
    quota: every such wait ends at the same phase of the period, whoever ran meanwhile. A
    preemption by another task ends whenever the scheduler says, at no particular phase.
    """
    waits = [(a, b) for a, b in waits if b - a >= PHASE_MIN_WAIT_NS]
    if period_ns <= 0 or len(waits) < PHASE_MIN_WAITS:
        return []
    phases = [b % period_ns for _, b in waits]
    best: list[tuple[int, int]] = []
    for p in phases:
        near = [w for w, q in zip(waits, phases, strict=True) if min((q - p) % period_ns, (p - q) % period_ns) <= PHASE_TOL_NS]
        if len(near) > len(best):
            best = near
    return best if len(best) >= PHASE_MIN_WAITS else []


def _counter_between(samples: list[CgroupCpu], lo: int, hi: int) -> int:
    """How much the group's throttled counter moved between the last sample at or before ``lo`` and the first at
    or after ``hi`` (the nearest ones when none are): no more of it can fall in [lo, hi]."""
    before = [c for c in samples if c.ts <= lo] or samples[:1]
    after = [c for c in samples if c.ts >= hi] or samples[-1:]
    return max(0, after[0].throttled_ns - before[-1].throttled_ns)


def _throttling(ctx: _Ctx, tgid: int, segs: list[tuple[int, int]], runq: int,
                waits: list[tuple[int, int]] = ()) -> _Piece | None:
    """cpu_throttling for a thread of ``tgid`` that waited ``runq`` ns runnable over ``segs``, or None.

    A throttled task is switched out as if preempted, by whoever runs next: only the
    cgroup's own counters say the wait was the quota. The cgroup is the CPU-quota
    cgroup the process was a member of around the window; its throttled time in the
    window is the cumulative counter interpolated at both ends (samples every 250 ms
    while it is throttled). The culprit is the member that used most CPU meanwhile
    (it spent the quota); alone in its cgroup, the victim throttles itself.
    """
    by_cg: dict[int, list[CgroupCpu]] = defaultdict(list)
    for c in ctx.ev.cgroup_cpu:
        by_cg[c.cgroup_id].append(c)
    mine = {c.cgroup_id for c in ctx.ev.cgroup_cpu if c.tgid == tgid}
    # a process that lived less than a sampling interval in a fresh cgroup is never seen as a member: then any
    # quota cgroup whose throttling is what its waits look like (ending at the group's period boundary) is its
    unseen = not mine
    best: _Piece | None = None
    for cg in mine or by_cg:
        rows = by_cg[cg]
        per_ts: dict[int, CgroupCpu] = {}
        for c in rows:
            per_ts.setdefault(c.ts, c)
        samples = sorted(per_ts.values(), key=lambda c: c.ts)
        thr = [(c.ts, c.throttled_ns) for c in samples]
        nrs = [(c.ts, c.nr_throttled) for c in samples]
        use = [(c.ts, c.usage_ns) for c in samples]
        throttled = int(sum(_interp(thr, b) - _interp(thr, a) for a, b in segs))
        aligned = _period_waits(waits, samples[-1].period_us * 1000)
        if unseen and len(aligned) < PHASE_MIN_WAITS:
            continue
        # the waits that ended at the period boundary were throttled (the counter, sampled every 250 ms or
        # slower on a loaded host, spreads a short window's throttling over the samples' span), up to what the
        # counter says the group was throttled between the samples around the window
        cap = _counter_between(samples, segs[0][0], segs[-1][1])
        throttled = max(throttled, min(sum(b - a for a, b in aligned), cap))
        if throttled < MIN_CAUSE_NS:
            continue
        nr = int(round(sum(_interp(nrs, b) - _interp(nrs, a) for a, b in segs)))
        usage = sum(_interp(use, b) - _interp(use, a) for a, b in segs)
        lo, hi = segs[0][0], segs[-1][1]
        wall = sum(b - a for a, b in segs)
        last = samples[-1]
        # CPU used per member from the samples around the window (members are read only while it is
        # throttled, so a short window may hold one sample of them: the context before it counts too)
        used: dict[int, list] = {}
        for c in rows:
            if c.tgid and lo - THROTTLE_MEMBER_CONTEXT_NS <= c.ts <= hi + THROTTLE_AFTER_NS:
                u = used.setdefault(c.tgid, [c.cpu_ns, c.cpu_ns, c.comm])
                u[0], u[1] = min(u[0], c.cpu_ns), max(u[1], c.cpu_ns)
        ranked = sorted(((t, v[1] - v[0], v[2]) for t, v in used.items()), key=lambda x: (x[1], x[0] == tgid),
                        reverse=True)
        if ranked and ranked[0][1] > 0:
            cul = ctx.culprit(ranked[0][0], None, ranked[0][2])
        else:
            cul = ctx.culprit(tgid)
        delay = min(throttled, runq)
        pct = 100.0 * last.quota_us / last.period_us if last.period_us else 0.0
        evidence = {"cgroup": last.cgroup, "quota_us": last.quota_us, "period_us": last.period_us,
                    "waits_at_period_boundary": len(aligned), "member_seen": not unseen,
                    "quota_cpus": round(pct / 100, 3), "throttled_ns": throttled, "nr_throttled": nr,
                    "usage_ns": int(usage), "usage_cpus": round(usage / wall, 3),
                    "members": [{"pid": t, "comm": cm, "cpu_ns": int(n)} for t, n, cm in ranked[:3]],
                    "fix": f"raise the CPU quota of {last.cgroup} (cgroup v2 cpu.max, v1 cpu.cfs_quota_us; now "
                           f"{last.quota_us} us per {last.period_us} us = {pct:.0f}% of a CPU)"}
        piece = _Piece("cpu_throttling", cul, delay, [evidence],
                       summary=f"CPU quota of cgroup {last.cgroup} ({pct:.0f}% of a CPU) used up, "
                               f"throttled in {nr} period{'s' if nr != 1 else ''}")
        if best is None or piece.delay_ns > best.delay_ns:
            best = piece
    return best


def _take_throttled(pieces: list[_Piece], thr: _Piece, runq: int) -> list[_Piece]:
    """The run-queue time the quota explains comes out of the preemption causes, in proportion: a
    throttled task's switch-outs name whoever ran next, which is not who kept it off the CPU."""
    keep = max(0.0, (runq - thr.delay_ns) / runq)
    out = []
    for p in pieces:
        if p.kind == "cpu_preemption":
            p.delay_ns = int(p.delay_ns * keep)
            for ch in p.children:
                ch.delay_ns = min(ch.delay_ns, p.delay_ns)
        out.append(p)
    out.append(thr)
    return out


class _Moved(NamedTuple):
    """A thread moved off its CPU by the migration stopper (its affinity or cpuset changed): from, to, when, how often."""

    from_cpu: int
    to_cpu: int
    ts: int
    moves: int
    by: str          # the stopper thread that moved it (migration/N)


MIGRATION = "migration/"


HELD_AT_RETURN_NS = 50_000_000     # a preempted wait's tail behind another holder counts from this long


def _held_at_return(o: OffCpu, ra: int, rb: int, tid: int) -> int | None:
    """Where, in a preempted wait [ra, rb], the task the thread displaced on its return started holding the CPU
    without a break (``displaced_since``), when that was another process than the preemptor and the tail is long:
    a short preemption followed by a long stretch behind a hog (a real-time job, a heavier group) is that hog's."""
    since = o.displaced_since
    if (o.displaced_tid <= 0 or o.displaced_tid == tid or o.displaced_tgid in (0, o.preemptor_tgid)
            or o.cpu_on != o.cpu_off or not since or not ra < since < rb or rb - since < HELD_AT_RETURN_NS):
        return None
    return since


MOVE_SETTLED_ROWS = 2     # a queued thread's move counts when it stayed this many rows on each side of it


def _placement_move(rows: list[OffCpu]) -> OffCpu | None:
    """The row of a one-time move of a queued thread: it ran on one CPU from the window's start, was moved while
    runnable (preempted on CPU a, back on CPU b) and stayed on b, with MOVE_SETTLED_ROWS rows on each side. An
    affinity or cpuset change moves a queued task without the stopper; the load balancer moves threads back and
    forth, and its single moves are not told apart (both are ``cpu_migration`` then, culprit the new CPU's holder)."""
    changes = [i for i, o in enumerate(rows) if o.cpu_off != o.cpu_on or (i and rows[i - 1].cpu_on != o.cpu_off)]
    if len(changes) != 1:
        return None
    i = changes[0]
    o = rows[i]
    if (o.reason == "preempted" and o.cpu_off != o.cpu_on and i >= MOVE_SETTLED_ROWS
            and len(rows) - i - 1 >= MOVE_SETTLED_ROWS):
        return o
    return None


def _track_move(moved: _Moved | None, o: OffCpu, queued_move: OffCpu | None) -> _Moved | None:
    """The move in effect after row ``o``: a new one when the stopper switched the thread out on one CPU and it came
    back on another (how an affinity or cpuset change moves a running task), or at the queued thread's one-time move;
    none once it left that CPU otherwise."""
    if o.reason == "preempted" and o.cpu_on != o.cpu_off and (o.preemptor_comm.startswith(MIGRATION)
                                                               or o is queued_move):
        by = o.preemptor_comm if o.preemptor_comm.startswith(MIGRATION) else "moved while queued"
        return _Moved(o.cpu_off, o.cpu_on, o.ts, (moved.moves if moved else 0) + 1, by)
    if moved is not None and (o.cpu_off != moved.to_cpu or o.cpu_on != moved.to_cpu):
        return None
    return moved


def _migration_pieces(ctx: _Ctx, tid: int, waits: list[tuple[int, int, int, _Moved]]) -> list[_Piece]:
    """``cpu_migration``: the thread was moved off its CPU and waited on the new one, behind whoever held it.

    Once moved, every run-queue wait on the new CPU (until it leaves it) is the move's
    consequence: on the CPU it was taken from it would not have queued behind these
    tasks. One piece per process that held the new CPU (``runners``), and one for the
    stretches nobody is known for.
    """
    if not waits:
        return []
    per: dict[int | None, list[tuple[int, int, int, _Moved, _Holder | None]]] = defaultdict(list)
    for a, b, cpu, mv in waits:
        held, left = ctx.runners(cpu, a, b, tid)
        for rt, h in held.items():
            per[rt].append((a, b, cpu, mv, h))
        for x, y in left:
            per[None].append((x, y, cpu, mv, None))
    out = []
    for rt, ws in per.items():
        ns = sum(h.ns if h else b - a for a, b, _, _, h in ws)
        mv = ws[0][3]
        moves = sorted({(w[3].from_cpu, w[3].to_cpu, w[3].ts) for w in ws})
        top = max((h for *_, h in ws if h), key=lambda h: h.ns, default=None)
        cul = ctx.culprit(rt, top.tid, top.comm) if rt is not None and top else Culprit(None, None, None)
        ev = {"from_cpu": mv.from_cpu, "to_cpu": mv.to_cpu, "moves": len(moves), "moved_by": mv.by,
              "moved_at": [t for *_, t in moves][:MAX_EVIDENCE], "runq_ns": ns, "waits": len(ws),
              "cpus": _cpus_json(_ns_per_cpu((c, h.ns if h else b - a) for a, b, c, _, h in ws)),
              "why_moved": "its CPU affinity or cpuset changed (or the load balancer moved it): moved while running "
                           "(by the migration stopper) or while queued, and it stayed on the new CPU"}
        who = f", where {cul.label()} held it" if cul.pid is not None else ""
        out.append(_Piece("cpu_migration", cul, ns, [ev], cpu=mv.to_cpu,
                          summary=f"moved from CPU {mv.from_cpu} to CPU {mv.to_cpu}{who}"))
    return out


IRQ_MIN_SHARE = 0.10      # interrupts must have taken this share of the thread's time on a CPU to be named
KSOFTIRQD = "ksoftirqd/"


def _on_cpu_stretches(rows: list[OffCpu], window: list[tuple[int, int]]) -> dict[int, list[tuple[int, int]]]:
    """Per CPU, the stretches of ``window`` the thread ran there, from its off-CPU rows (time-ordered): before a
    row it ran on the CPU it left (``cpu_off``), after its last row on the one it came back to (``cpu_on``).
    A thread without rows in a segment is on no known CPU there."""
    out: dict[int, list[tuple[int, int]]] = defaultdict(list)
    # rows are one thread's, disjoint and by start: bisect each segment (a followed waker has thousands of both)
    starts = [o.ts for o in rows]
    for lo, hi in window:
        i = max(0, bisect_left(starts, lo) - 1)
        mine = [o for o in rows[i:bisect_left(starts, hi)] if o.end_ts > lo]
        t, last = lo, None
        for o in mine:
            if o.ts > t:
                out[o.cpu_off].append((t, o.ts))
            t, last = max(t, o.end_ts), o
        if last is not None and hi > t:
            out[last.cpu_on].append((t, hi))
    return out


def _irq_counters(rows: list[CpuIrq]) -> tuple[list[tuple[int, int]], list[CpuIrq]]:
    """One CPU's samples: (ts, irq + softirq ns so far) for ``_interp``, and the samples themselves, by time."""
    per_ts: dict[int, CpuIrq] = {}
    for r in rows:
        per_ts.setdefault(r.ts, r)
    samples = sorted(per_ts.values(), key=lambda r: r.ts)
    return [(r.ts, r.irq_ns + r.softirq_ns) for r in samples], samples


_SOFTIRQ_FIELDS = ("hi", "timer", "net_tx", "net_rx", "block", "irq_poll", "tasklet", "sched", "hrtimer", "rcu")


def _interrupts(ctx: _Ctx, rows: list[OffCpu], window: list[tuple[int, int]], pieces: list[_Piece]) -> list[_Piece]:
    """``softirq``: time interrupts took from the thread on its CPU, with the run-queue waits behind ksoftirqd.

    An interrupted thread looks on-CPU: only the CPU's own counters (agent/cpu_irq.py,
    sampled every second) say how much of that CPU went to hard and soft
    interrupts. Over each stretch the thread ran on CPU c, c's interrupt time
    (the cumulative counter interpolated at both ends) was taken from it. Softirqs
    that pile up move to ksoftirqd/c, a thread the scheduler shows: a run-queue wait
    behind it is the same cause, so those ``cpu_preemption`` pieces fold into this
    one. Named only when interrupts took at least IRQ_MIN_SHARE of the thread's time
    on the CPU (a timer tick's share is noise); the culprit is the CPU's interrupt
    load, with the softirq kinds raised there meanwhile as evidence.
    """
    by_cpu: dict[int, list[CpuIrq]] = defaultdict(list)
    for r in ctx.ev.cpu_irq:
        by_cpu[r.cpu].append(r)
    behind = [p for p in pieces if p.kind == "cpu_preemption" and (p.culprit.comm or "").startswith(KSOFTIRQD)]
    if not by_cpu and not behind:
        return pieces
    stolen: dict[int, int] = {}
    on: dict[int, int] = {}
    raised: dict[str, float] = defaultdict(float)
    for cpu, segs in _on_cpu_stretches(rows, window).items():
        if cpu not in by_cpu:
            continue
        cnt, samples = _irq_counters(by_cpu[cpu])
        took = sum(_interp(cnt, b) - _interp(cnt, a) for a, b in segs)
        ran = sum(b - a for a, b in segs)
        if ran <= 0 or took < IRQ_MIN_SHARE * ran:
            continue
        stolen[cpu], on[cpu] = int(took), ran
        for f in _SOFTIRQ_FIELDS:
            series = [(r.ts, getattr(r, f)) for r in samples]
            raised[f] += sum(_interp(series, b) - _interp(series, a) for a, b in segs)
    # a wait behind ksoftirqd counts where interrupts took the CPU, or where ksoftirqd itself held it that much
    wall = sum(b - a for a, b in window)
    held: dict[int, int] = defaultdict(int)
    for p in behind:
        held[p.cpu if p.cpu is not None else -1] += p.delay_ns
    queued = {c: ns for c, ns in held.items() if c in stolen or ns >= IRQ_MIN_SHARE * wall}
    behind = [p for p in behind if (p.cpu if p.cpu is not None else -1) in queued]
    total = sum(stolen.values()) + sum(queued.values())
    if total < MIN_CAUSE_NS:
        return pieces
    per_cpu = {c: stolen.get(c, 0) + queued.get(c, 0) for c in set(stolen) | set(queued)}
    cpu = max(per_cpu.items(), key=lambda kv: (kv[1], -kv[0]))[0]
    top = sorted(((k, round(v)) for k, v in raised.items() if v >= 1), key=lambda kv: kv[1], reverse=True)
    share = stolen.get(cpu, 0) / on[cpu] if cpu in on else 0.0
    evidence = {"cpu": cpu, "irq_share": round(share, 3), "stolen_ns": sum(stolen.values()),
                "on_cpu_ns": sum(on.values()), "ksoftirqd_runq_ns": sum(queued.values()),
                "cpus": _cpus_json(per_cpu), "softirqs_raised": dict(top),
                "fix": f"move interrupt work off CPU {cpu} (IRQ affinity /proc/irq/*/smp_affinity, RPS/RFS masks, "
                       f"more NIC queues) or the service off it"}
    # raises are counts, not time (one NET_RX raise can drain a thousand packets): shown, not used to pick a kind
    raises = ", ".join(f"{k.upper()} {v}" for k, v in top[:3])
    piece = _Piece("softirq", Culprit(None, f"interrupts on CPU {cpu}"), total, [evidence], cpu=cpu,
                   summary=f"CPU {cpu} spent {share * 100:.0f}% of the time the thread ran there in interrupts"
                           + (f" (softirqs raised there meanwhile: {raises})" if raises else ""))
    return [p for p in pieces if p not in behind] + [piece]


def _key(kind: str, c: Culprit) -> tuple:
    # preemption and memory pressure are per process; waits keep the thread (lock holders are threads)
    return (kind, c.pid,
            None if kind in ("cpu_preemption", "memory_pressure", "cpu_throttling", "cpu_migration") else c.tid)


def _aggregate(pieces: Iterable[_Piece | Cause]) -> list[Cause]:
    """Merge pieces with the same (kind, culprit) and rank by delay; children merge the same way."""
    out: dict[tuple, Cause] = {}
    for p in pieces:
        k = _key(p.kind, p.culprit)
        if p.kind == "remote_service" and p.culprit.pid is None:
            k += (p.summary,)   # waits on two unrecorded peers stay apart: a cross-host chain follows each (causal/hosts.py)
        c = out.get(k)
        if c is None:
            c = out[k] = Cause(p.kind, p.culprit, 0, [], [], p.cpu, p.summary)
        c.delay_ns += p.delay_ns
        if len(c.evidence) < MAX_EVIDENCE:
            c.evidence.extend(p.evidence[: MAX_EVIDENCE - len(c.evidence)])
        c.children.extend(p.children)
    for c in out.values():
        c.children = _aggregate(c.children) if c.children else []
    ranked = [c for c in out.values() if c.delay_ns >= MIN_CAUSE_NS]
    ranked.sort(key=lambda c: c.delay_ns, reverse=True)
    return ranked


def root_chain(causes: list[Cause]) -> list[Cause]:
    """Largest direct cause, then its largest significant child, and so on: newest effect first.

    A child is the next link only if it explains more of its parent's delay than the
    culprit's own part does (the parent's delay no child explains: a lock holder's hold,
    a server's work, its sleeps): a holder that kept a lock 70 ms on purpose and waited
    30 ms for a CPU before releasing it is the root cause, not whoever had that CPU.
    """
    if not causes:
        return []
    chain = [causes[0]]
    while chain[-1].children:
        parent = chain[-1]
        best = max(parent.children, key=lambda c: c.delay_ns)
        own = parent.delay_ns - sum(c.delay_ns for c in parent.children)
        if best.delay_ns < SIGNIFICANT * parent.delay_ns or best.delay_ns < own:
            break
        chain.append(best)
    return chain


def _operation(ev: Evidence, tid: int, lo: int, hi: int) -> tuple[str, int]:
    best: Syscall | None = None
    for s in [*ev.syscalls.get(tid, ()), *ev.blocked_calls.get(tid, ())]:
        if _overlap(s.ts, s.end_ts, lo, hi) and (best is None or s.end_ts - s.ts > best.end_ts - best.ts):
            best = s
    if best is None:
        return "", 0
    arg = "semid" if best.syscall in SEM_CALLS else "fd"    # what the call's first argument is
    op = best.syscall + (f" {arg}={best.fd}" if best.fd >= 0 else "")
    return op, best.end_ts - best.ts


def _quick_score(ctx: _Ctx, tid: int, lo: int, hi: int) -> int:
    """How delayed a thread was, as ``_delay_score`` of its causes would say, without explaining each wait:
    run-queue time plus blocked time not spent sleeping by itself (a timed sleep, a futex or poll wait
    nobody else ended). Ranking a busy process's threads by full analysis cost more than the answer."""
    total = 0
    for o in ctx.offcpu_in(tid, lo, hi):
        a0, b0 = _clip(o.ts, o.end_ts, lo, hi)
        if b0 <= a0:
            continue
        if o.reason == "preempted":
            total += b0 - a0
            continue
        wake = o.wake_ts or o.end_ts
        ba, bb = _clip(o.ts, wake, lo, hi)
        ra, rb = _clip(wake, o.end_ts, lo, hi)
        total += max(0, rb - ra)
        if bb <= ba:
            continue
        sc = ctx.syscall_at(tid, o.ts) or ctx.syscall_at(tid, ba)
        name = sc.syscall if sc else ""
        woken = bool(o.waker_tid) and o.waker_tid != tid and o.waker_tgid != 0
        if not woken and o.waker_tgid == 0 and o.wake_ts and name not in SLEEP_CALLS:
            woken = ctx.infer_waker(o, name) is not None
        if name in SLEEP_CALLS or (name in MUX_CALLS | {"futex"} and not woken):
            continue
        total += bb - ba
    return total


def _delay_score(causes: list[Cause]) -> int:
    return sum(c.delay_ns for c in causes if c.kind != "sleep")


def analyze(ev: Evidence) -> Analysis:
    """The full answer for ``ev.interval``; picks the most delayed thread when no tid was given."""
    iv: Interval = ev.interval
    ctx = _Ctx(ev)
    lo, hi = iv.start_ns, iv.end_ns
    if iv.tid is not None:
        tids = [iv.tid]
    else:
        tids = sorted({t for t, rows in ev.offcpu.items() if rows and rows[0].tgid == iv.tgid}) or [iv.tgid]
    best_tid, best_score = tids[0], -1
    if len(tids) > 1:
        # a thread's direct causes do not depend on what its wakers went through: rank the threads without
        # following anyone, then follow the chain of the most delayed one only
        for t in tids:
            score = _quick_score(ctx, t, lo, hi)
            if score > best_score or (score == best_score and t == iv.tgid):
                best_tid, best_score = t, score
    bd, causes, _ = _thread_causes(ctx, best_tid, [(lo, hi)], 0, frozenset())
    chain = root_chain(causes)
    notes: list[str] = []
    if iv.tid is None and len(tids) > 1:
        notes.append(f"{len(tids)} threads had off-CPU time; analysed tid {bd.tid}, the most delayed (pass a tid to choose)")
    if not ev.offcpu.get(bd.tid):
        notes.append("no off-CPU intervals recorded for this thread in the window: it ran throughout, "
                     "or it was not watched")
    notes.append("off-CPU intervals shorter than the recorder's threshold are counted in the kernel, not here; "
                 "they show up as on-CPU time")
    notes.extend(f"evidence cut by a bound: {t} (rows beyond the limit were not read)" for t in ev.truncated)
    op, op_ns = _operation(ev, bd.tid, lo, hi)
    return Analysis(interval=iv, comm=ev.comms.get(iv.tgid, "?"), operation=op, operation_ns=op_ns,
                    root_cause=chain[-1] if chain else None, breakdown=bd, chain=chain, causes=causes, notes=notes)


__all__ = ["analyze", "root_chain", "MAX_DEPTH", "SIGNIFICANT"]
