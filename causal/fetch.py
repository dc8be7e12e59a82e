"""The only part of the causal analysis that talks to the store.

It pulls, in a handful of SQL queries, every row the pure analysis may need for
one interval, and hands back plain dataclasses (an ``Evidence`` bundle) so that
``analyze`` stays testable on hand-built data and independent of chDB or
ClickHouse. Related processes (wakers, socket peers) are fetched in a few
bounded rounds, one set of queries per round, not one query per process.

Only integers are ever interpolated into SQL, and only after ``int()``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Protocol

from kprobe.causal.model import Interval

MAX_ROUNDS = 3            # rounds of "fetch the processes that woke/served the ones we have"
MAX_RELATED_PER_ROUND = 32
ROW_LIMIT = 200_000       # per query: a guard against a system-wide recording of a huge window


class Store(Protocol):
    def query_rows(self, sql: str) -> list[dict]: ...


@dataclass(frozen=True)
class OffCpu:
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


@dataclass(frozen=True)
class Syscall:
    tgid: int
    tid: int
    syscall: str
    fd: int
    ts: int
    end_ts: int
    ret: int
    bytes: int


@dataclass(frozen=True)
class Reclaim:
    tgid: int
    tid: int
    comm: str
    kind: str
    ts: int
    end_ts: int
    nr_reclaimed: int
    cpu: int


@dataclass(frozen=True)
class Fault:
    tgid: int
    tid: int
    ts: int
    count: int


@dataclass(frozen=True)
class BlockIO:
    tgid: int
    tid: int
    comm: str
    ts: int
    end_ts: int
    bytes: int
    rwbs: str


@dataclass(frozen=True)
class SockIO:
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


@dataclass(frozen=True)
class Retrans:
    ts: int
    skaddr: int
    saddr: str
    sport: int
    daddr: str
    dport: int


@dataclass(frozen=True)
class FdOpen:
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
    reclaims: list[Reclaim] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    block_io: list[BlockIO] = field(default_factory=list)
    sock_io: list[SockIO] = field(default_factory=list)
    retrans: list[Retrans] = field(default_factory=list)
    fd_open: list[FdOpen] = field(default_factory=list)
    comms: dict[int, str] = field(default_factory=dict)       # tgid -> comm, from whatever rows name it
    fetched_tgids: set[int] = field(default_factory=set)
    queries: int = 0

    def add_offcpu(self, rows: list[OffCpu]) -> None:
        for r in rows:
            self.offcpu.setdefault(r.tid, []).append(r)
            self.comms.setdefault(r.tgid, r.comm)
        for v in self.offcpu.values():
            v.sort(key=lambda r: r.ts)

    def add_syscalls(self, rows: list[Syscall]) -> None:
        for r in rows:
            self.syscalls.setdefault(r.tid, []).append(r)
        for v in self.syscalls.values():
            v.sort(key=lambda r: r.ts)

    def has_data(self) -> bool:
        tg = self.interval.tgid
        return (any(r.tgid == tg for v in self.offcpu.values() for r in v)
                or any(r.tgid == tg for v in self.syscalls.values() for r in v)
                or any(r.tgid == tg for r in self.faults)
                or any(r.tgid == tg for r in self.sock_io))


def _i(v: Any) -> int:
    """JSONEachRow quotes 64-bit integers; everything numeric goes through here."""
    return int(v) if v not in (None, "") else 0


def _s(v: Any) -> str:
    return "" if v is None else str(v)


def _tgid_list(tgids: set[int]) -> str:
    return ", ".join(str(int(t)) for t in sorted(tgids))


def _overlap(lo: int, hi: int) -> str:
    """Rows whose [ts, end_ts] overlaps [lo, hi]."""
    return f"end_ts >= {int(lo)} AND ts <= {int(hi)}"


def _q(store: Store, ev: Evidence, sql: str) -> list[dict]:
    ev.queries += 1
    return store.query_rows(f"{sql} LIMIT {ROW_LIMIT}")


def _fetch_offcpu(store: Store, ev: Evidence, tgids: set[int], lo: int, hi: int) -> None:
    rows = _q(store, ev,
              "SELECT tgid, tid, comm, ts, end_ts, wake_ts, reason, cpu_off, cpu_on, preemptor_tgid, preemptor_tid, "
              "preemptor_comm, waker_tgid, waker_tid, waker_comm FROM offcpu "
              f"WHERE tgid IN ({_tgid_list(tgids)}) AND {_overlap(lo, hi)} ORDER BY ts")
    ev.add_offcpu([OffCpu(
        _i(r["tgid"]), _i(r["tid"]), _s(r["comm"]), _i(r["ts"]), _i(r["end_ts"]), _i(r["wake_ts"]), _s(r["reason"]),
        _i(r["cpu_off"]), _i(r["cpu_on"]), _i(r["preemptor_tgid"]), _i(r["preemptor_tid"]), _s(r["preemptor_comm"]),
        _i(r["waker_tgid"]), _i(r["waker_tid"]), _s(r["waker_comm"])) for r in rows])


def _fetch_syscalls(store: Store, ev: Evidence, tgids: set[int], lo: int, hi: int) -> None:
    rows = _q(store, ev,
              "SELECT tgid, tid, syscall, fd, ts, end_ts, ret, bytes FROM syscall "
              f"WHERE tgid IN ({_tgid_list(tgids)}) AND {_overlap(lo, hi)} ORDER BY ts")
    ev.add_syscalls([Syscall(_i(r["tgid"]), _i(r["tid"]), _s(r["syscall"]), _i(r["fd"]), _i(r["ts"]),
                             _i(r["end_ts"]), _i(r["ret"]), _i(r["bytes"])) for r in rows])


def _sock(r: dict) -> SockIO:
    return SockIO(_i(r["tgid"]), _i(r["tid"]), _i(r["ts"]), _i(r["skaddr"]), _s(r["dir"]), _i(r["bytes"]),
                  _s(r["saddr"]), _i(r["sport"]), _s(r["daddr"]), _i(r["dport"]))


_SOCK_COLS = "tgid, tid, ts, skaddr, dir, bytes, saddr, sport, daddr, dport"


def _fetch_sock(store: Store, ev: Evidence, tgids: set[int], lo: int, hi: int) -> None:
    rows = _q(store, ev, f"SELECT {_SOCK_COLS} FROM sock_io WHERE tgid IN ({_tgid_list(tgids)}) "
                         f"AND ts >= {int(lo)} AND ts <= {int(hi)} ORDER BY ts")
    have = set(ev.sock_io)
    ev.sock_io.extend(s for s in map(_sock, rows) if s not in have)


def _fetch_sock_peers(store: Store, ev: Evidence, lo: int, hi: int) -> set[int]:
    """Processes on the other end of the victim set's local connections (their local port = our remote port)."""
    ports = {(s.dport, s.sport) for s in ev.sock_io if s.tgid in ev.fetched_tgids and s.dport and s.sport}
    if not ports:
        return set()
    cond = " OR ".join(f"(sport = {int(a)} AND dport = {int(b)})" for a, b in sorted(ports)[:64])
    rows = _q(store, ev, f"SELECT {_SOCK_COLS} FROM sock_io WHERE ({cond}) "
                         f"AND ts >= {int(lo)} AND ts <= {int(hi)} ORDER BY ts")
    have = set(ev.sock_io)
    new = [s for s in map(_sock, rows) if s not in have]
    ev.sock_io.extend(new)
    return {s.tgid for s in new}


def _related_tgids(ev: Evidence) -> set[int]:
    """Processes whose own delays may explain a fetched thread's wait: its wakers."""
    out: set[int] = set()
    for rows in ev.offcpu.values():
        for r in rows:
            if r.reason != "preempted" and r.waker_tgid and r.waker_tgid not in ev.fetched_tgids:
                out.add(r.waker_tgid)
    return out


WAKE_EPS_NS = 200_000      # a wake-up traced on the target CPU lands this close to the waker's syscall
WAKER_CALLS = ("futex", "write", "writev", "pwrite64", "sendto", "sendmsg", "sendmmsg", "close")


def unknown_wakes(ev: Evidence, min_blocked_ns: int = 1_000_000, limit: int = 32) -> list[int]:
    """Wake times of long blocked intervals whose waker the kernel recorded as the idle task (pid 0).

    sched_wakeup fires on the target CPU for queued (IPI) wake-ups, so the task
    current there, often idle, is recorded instead of the real waker; the real
    waker's wake syscall (futex wake, pipe write, send) brackets that time.
    """
    cand = []
    for rows in ev.offcpu.values():
        for r in rows:
            if r.reason != "preempted" and r.wake_ts and r.waker_tgid == 0 and r.wake_ts - r.ts >= min_blocked_ns:
                cand.append((r.wake_ts - r.ts, r.wake_ts))
    cand.sort(reverse=True)
    return sorted({w for _, w in cand[:limit]})


def _fetch_waker_calls(store: Store, ev: Evidence, wakes: list[int]) -> set[int]:
    """Other processes' wake-type syscalls bracketing those wake times: the candidates for the real waker."""
    if not wakes:
        return set()
    e = WAKE_EPS_NS
    cond = " OR ".join(f"(ts <= {int(w) + e} AND end_ts >= {int(w) - e})" for w in wakes)
    calls = ", ".join(f"'{c}'" for c in WAKER_CALLS)   # constants, not input
    rows = _q(store, ev, "SELECT tgid, tid, syscall, fd, ts, end_ts, ret, bytes FROM syscall "
                         f"WHERE syscall IN ({calls}) AND ({cond}) ORDER BY ts")
    have = {r for v in ev.syscalls.values() for r in v}
    new = [Syscall(_i(r["tgid"]), _i(r["tid"]), _s(r["syscall"]), _i(r["fd"]), _i(r["ts"]), _i(r["end_ts"]),
                   _i(r["ret"]), _i(r["bytes"])) for r in rows]
    new = [r for r in new if r not in have]
    ev.add_syscalls(new)
    return {r.tgid for r in new}


def fetch_evidence(store: Store, interval: Interval, max_rounds: int = MAX_ROUNDS) -> Evidence:
    """All rows for ``interval``: victim tables, system-wide reclaim/disk/retransmits, then related processes.

    Query count: 8 for the victim plus at most 5 per round of related processes.
    """
    ev = Evidence(interval)
    lo, hi, tg = interval.start_ns, interval.end_ns, {interval.tgid}
    ev.fetched_tgids |= tg
    _fetch_offcpu(store, ev, tg, lo, hi)
    _fetch_syscalls(store, ev, tg, lo, hi)
    _fetch_sock(store, ev, tg, lo, hi)
    ev.faults = [Fault(_i(r["tgid"]), _i(r["tid"]), _i(r["ts"]), _i(r["count"])) for r in _q(
        store, ev, f"SELECT tgid, tid, ts, count FROM fault WHERE tgid = {int(interval.tgid)} "
                   f"AND ts >= {int(lo)} AND ts <= {int(hi)} ORDER BY ts")]
    # opens, and successful closes as path '' so a reused fd number is not named after an old file
    ev.fd_open = [FdOpen(_i(r["tgid"]), _i(r["fd"]), _i(r["ts"]), _s(r["path"])) for r in _q(
        store, ev, f"SELECT tgid, toInt64(fd) AS fd, ts, path FROM fd_open WHERE tgid = {int(interval.tgid)} "
                   f"AND ts <= {int(hi)} UNION ALL SELECT tgid, toInt64(fd) AS fd, ts, '' AS path FROM syscall "
                   f"WHERE tgid = {int(interval.tgid)} AND syscall = 'close' AND ret = 0 AND ts <= {int(hi)} "
                   "ORDER BY ts")]
    ev.reclaims = [Reclaim(_i(r["tgid"]), _i(r["tid"]), _s(r["comm"]), _s(r["kind"]), _i(r["ts"]), _i(r["end_ts"]),
                           _i(r["nr_reclaimed"]), _i(r["cpu"])) for r in _q(
        store, ev, "SELECT tgid, tid, comm, kind, ts, end_ts, nr_reclaimed, cpu FROM reclaim "
                   f"WHERE {_overlap(lo, hi)} ORDER BY ts")]
    ev.block_io = [BlockIO(_i(r["tgid"]), _i(r["tid"]), _s(r["comm"]), _i(r["ts"]), _i(r["end_ts"]), _i(r["bytes"]),
                           _s(r["rwbs"])) for r in _q(
        store, ev, "SELECT tgid, tid, comm, ts, end_ts, bytes, rwbs FROM block_io "
                   f"WHERE {_overlap(lo, hi)} ORDER BY ts")]
    ev.retrans = [Retrans(_i(r["ts"]), _i(r["skaddr"]), _s(r["saddr"]), _i(r["sport"]), _s(r["daddr"]),
                          _i(r["dport"])) for r in _q(
        store, ev, "SELECT ts, skaddr, saddr, sport, daddr, dport FROM tcp_retrans "
                   f"WHERE ts >= {int(lo)} AND ts <= {int(hi)} ORDER BY ts")]
    for r in ev.reclaims:
        ev.comms.setdefault(r.tgid, r.comm)
    for r in ev.block_io:
        ev.comms.setdefault(r.tgid, r.comm)

    asked: set[int] = set()
    for _ in range(max_rounds):
        wakes = [w for w in unknown_wakes(ev) if w not in asked]
        asked.update(wakes)
        new = (_related_tgids(ev) | _fetch_sock_peers(store, ev, lo, hi) | _fetch_waker_calls(store, ev, wakes))
        new -= ev.fetched_tgids | {0}
        if not new:
            break
        new = set(sorted(new)[:MAX_RELATED_PER_ROUND])
        ev.fetched_tgids |= new
        _fetch_offcpu(store, ev, new, lo, hi)
        _fetch_syscalls(store, ev, new, lo, hi)
        _fetch_sock(store, ev, new, lo, hi)
    _name_wakers(ev)
    return ev


def _name_wakers(ev: Evidence) -> None:
    """Fill comms for processes only seen as wakers/preemptors, so culprits have names.

    The latest name wins: a process seen first as `taskset` or `sh` has exec'd into what it really is.
    """
    seen: dict[int, tuple[int, str]] = defaultdict(lambda: (0, ""))
    for rows in ev.offcpu.values():
        for r in rows:
            for tgid, comm in ((r.waker_tgid, r.waker_comm), (r.preemptor_tgid, r.preemptor_comm)):
                if tgid and comm and r.ts >= seen[tgid][0]:
                    seen[tgid] = (r.ts, comm)
    for k, (_, v) in seen.items():
        if k not in ev.fetched_tgids:
            ev.comms[k] = v
