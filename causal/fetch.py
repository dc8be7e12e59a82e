"""The only part of the causal analysis that talks to the store.

It pulls, in a handful of SQL queries, every row the pure analysis may need for
one interval, and hands back plain dataclasses (an ``Evidence`` bundle) so that
``analyze`` stays testable on hand-built data and independent of chDB or
ClickHouse. Related processes (wakers, socket peers) are fetched in a few
bounded rounds, one set of queries per round, not one query per process.

Only integers are ever interpolated into SQL, and only after ``int()``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
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
    memcg: int = 0     # the reclaiming task's memory cgroup id (0: unknown)


@dataclass(frozen=True)
class ReclaimTotal:
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
    dev: int = 0


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
    reclaims: list[Reclaim] = field(default_factory=list)      # stalls overlapping the window
    # per process and memcg over the window plus RECLAIM_CONTEXT_NS before it; None: derive from ``reclaims``
    reclaim_totals: list[ReclaimTotal] | None = None
    faults: list[Fault] = field(default_factory=list)
    block_io: list[BlockIO] = field(default_factory=list)
    sock_io: list[SockIO] = field(default_factory=list)
    retrans: list[Retrans] = field(default_factory=list)
    fd_open: list[FdOpen] = field(default_factory=list)
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
        for r in rows:
            self.offcpu.setdefault(r.tid, []).append(r)
            self.note_comm(r.tgid, r.tid, r.ts, r.comm)
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
    """Every value arrives as text (one array type for every table in a round); numbers go through here."""
    return int(v) if v not in (None, "") else 0


def _s(v: Any) -> str:
    return "" if v is None else str(v)


def _tgid_list(tgids: set[int]) -> str:
    return ", ".join(str(int(t)) for t in sorted(tgids))


RECLAIM_CONTEXT_NS = 5_000_000_000   # reclaim by others this long before the window still names the memory hog
LOOKBACK_NS = 600_000_000_000   # rows of time-ordered tables starting this long before the window are not read


def _overlap(lo: int, hi: int, lookback: int | None = None) -> str:
    """Rows whose [ts, end_ts] overlaps [lo, hi]; ``lookback`` bounds ts from below so a ts-ordered key prunes."""
    cond = f"end_ts >= {int(lo)} AND ts <= {int(hi)}"
    return cond if lookback is None else f"{cond} AND ts >= {int(lo) - int(lookback)}"


@dataclass(frozen=True)
class _Part:
    """One branch of a round's UNION ALL: a tag naming what the rows are, their columns, and FROM ... WHERE."""

    tag: str
    cls: type
    cols: tuple[str, ...]
    source: str


def _converters(cls: type) -> tuple[Callable[[Any], Any], ...]:
    """Per field of a record class: text -> value (str fields stay text). Built once per round."""
    return tuple(_s if f.type == "str" else _i for f in fields(cls))


def _make(cls: type, v: list, conv: tuple[Callable[[Any], Any], ...] | None = None) -> Any:
    """Row values (text, in the dataclass's field order) -> the dataclass."""
    return cls(*[c(x) for c, x in zip(conv or _converters(cls), v, strict=True)])


def _round(store: Store, ev: Evidence, parts: list[_Part]) -> dict[str, list]:
    """All of a round's reads in ONE statement: a chDB query costs a few ms before it reads a row.

    Each branch casts its columns to one Array(String) so the branches share a
    type; a branch that hits ROW_LIMIT is reported in ``ev.truncated``.
    """
    out: dict[str, list] = {p.tag: [] for p in parts}
    if not parts:
        return out
    sql = " UNION ALL ".join(
        f"(SELECT '{p.tag}' AS k, [{', '.join(f'CAST({c} AS String)' for c in p.cols)}] AS v "
        f"{p.source} LIMIT {ROW_LIMIT})" for p in parts)
    ev.queries += 1
    by_tag = {p.tag: (p.cls, _converters(p.cls), out[p.tag]) for p in parts}
    for r in store.query_rows(sql):
        cls, conv, dest = by_tag[r["k"]]
        dest.append(_make(cls, r["v"], conv))
    for tag, rows in out.items():
        if len(rows) >= ROW_LIMIT:
            ev.truncated.append(tag)
    return out


_OFFCPU_COLS = ("tgid", "tid", "comm", "ts", "end_ts", "wake_ts", "reason", "cpu_off", "cpu_on", "preemptor_tgid",
                "preemptor_tid", "preemptor_comm", "waker_tgid", "waker_tid", "waker_comm")
_SYSCALL_COLS = ("tgid", "tid", "syscall", "fd", "ts", "end_ts", "ret", "bytes")
_SOCK_COLS = ("tgid", "tid", "ts", "skaddr", "dir", "bytes", "saddr", "sport", "daddr", "dport")


def _process_parts(tgids: set[int], lo: int, hi: int) -> list[_Part]:
    """Per-process tables (ordered by tgid, tid, ts: the tgid list prunes by primary key)."""
    tl = _tgid_list(tgids)
    return [
        _Part("offcpu", OffCpu, _OFFCPU_COLS, f"FROM offcpu WHERE tgid IN ({tl}) AND {_overlap(lo, hi)}"),
        _Part("syscall", Syscall, _SYSCALL_COLS, f"FROM syscall WHERE tgid IN ({tl}) AND {_overlap(lo, hi)}"),
        _Part("sock_io", SockIO, _SOCK_COLS,
              f"FROM sock_io WHERE tgid IN ({tl}) AND ts >= {int(lo)} AND ts <= {int(hi)}"),
    ]


def _victim_parts(iv: Interval) -> list[_Part]:
    """Round 0: the victim's own tables plus system-wide reclaim (any thread's time may be reclaim).

    Block I/O and retransmits are system-wide too, but only some waits read them,
    as do the victim's file opens (they name the file of a disk wait): those are
    fetched by ``_deferred_parts`` once the evidence shows such a wait.
    """
    lo, hi, tg = iv.start_ns, iv.end_ns, int(iv.tgid)
    clo = lo - RECLAIM_CONTEXT_NS
    offcpu, _, sock = _process_parts({tg}, lo, hi)
    return [offcpu, sock,
        # the window's syscalls, and every earlier successful close: with the opens they name an fd at any time
        _Part("syscall", Syscall, _SYSCALL_COLS,
              f"FROM syscall WHERE tgid = {tg} AND ts <= {int(hi)} AND (end_ts >= {int(lo)} "
              "OR (syscall = 'close' AND ret = 0))"),
        _Part("fault", Fault, ("tgid", "tid", "ts", "count"),
              f"FROM fault WHERE tgid = {tg} AND ts >= {int(lo)} AND ts <= {int(hi)}"),
        _Part("reclaim", Reclaim, ("tgid", "tid", "comm", "kind", "ts", "end_ts", "nr_reclaimed", "cpu", "cgroup_id"),
              f"FROM reclaim WHERE {_overlap(lo, hi, LOOKBACK_NS)}"),
        # the context before the window only ranks reclaimers: totals, not thousands of rows (reclaim_totals)
        _Part("reclaim_total", ReclaimTotal,
              ("tgid", "cgroup_id", "argMax(comm, ts)",
               f"sum(greatest(0, toInt64(least(end_ts, {int(hi)})) - toInt64(greatest(ts, {int(clo)}))))",
               "sum(nr_reclaimed)"),
              f"FROM reclaim WHERE {_overlap(clo, hi, LOOKBACK_NS)} GROUP BY tgid, cgroup_id"),
    ]


DISK_WAIT_CALLS = ("fsync", "fdatasync", "sync_file_range")


def _needs(ev: Evidence) -> set[str]:
    """The system-wide tables the analysis of the rows fetched so far can read.

    ``block_io`` names the culprit of a disk wait (an uninterruptible sleep, or a
    sync call); ``tcp_retrans`` explains a socket wait, so it needs socket I/O.
    Without such waits neither is read, and fetching them only costs time.
    """
    out: set[str] = set()
    if ev.sock_io:
        out.add("tcp_retrans")
    if (any(r.reason == "uninterruptible" for v in ev.offcpu.values() for r in v)
            or any(r.syscall in DISK_WAIT_CALLS for v in ev.syscalls.values() for r in v)):
        out.add("block_io")
    return out


FD_RECENT_NS = 60_000_000_000     # every open this close to the window is read (a syscall in flight may predate it)


def _deferred_parts(ev: Evidence, tables: set[str]) -> list[_Part]:
    lo, hi = ev.interval.start_ns, ev.interval.end_ns
    parts = []
    if "block_io" in tables:
        # an fd's path at any time in (or shortly before) the window: opens since FD_RECENT_NS before it,
        # and of older ones only each fd's latest (a service opens hundreds of files at start-up)
        tg, old = int(ev.interval.tgid), int(lo) - FD_RECENT_NS
        parts.append(_Part("fd_open", FdOpen, ("tgid", "fd", "ts", "path"),
                           f"FROM fd_open WHERE tgid = {tg} AND ts <= {int(hi)} AND (ts >= {old} OR (fd, ts) IN "
                           f"(SELECT fd, max(ts) FROM fd_open WHERE tgid = {tg} AND ts < {old} GROUP BY fd))"))
        parts.append(_Part("block_io", BlockIO, ("tgid", "tid", "comm", "ts", "end_ts", "bytes", "rwbs", "dev"),
                           f"FROM block_io WHERE {_overlap(lo, hi, LOOKBACK_NS)}"))
    if "tcp_retrans" in tables:
        parts.append(_Part("tcp_retrans", Retrans, ("ts", "skaddr", "saddr", "sport", "daddr", "dport"),
                           f"FROM tcp_retrans WHERE ts >= {int(lo)} AND ts <= {int(hi)}"))
    return parts


def _peer_part(ports: set[tuple[int, int]], lo: int, hi: int) -> _Part:
    """Socket I/O on the other end of known connections: their local port is our remote port and vice versa."""
    cond = " OR ".join(f"(sport = {int(a)} AND dport = {int(b)})" for a, b in sorted(ports)[:64])
    return _Part("peer_sock", SockIO, _SOCK_COLS, f"FROM sock_io WHERE ts >= {int(lo)} AND ts <= {int(hi)} AND ({cond})")


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
WAKER_CALL_LOOKBACK_NS = 10_000_000_000   # wake-type calls are short; this bound lets the ts key prune


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


def _waker_call_part(wakes: list[int]) -> _Part:
    """Other processes' wake-type syscalls bracketing those wake times: the candidates for the real waker."""
    e = WAKE_EPS_NS
    cond = " OR ".join(f"(ts <= {int(w) + e} AND end_ts >= {int(w) - e})" for w in wakes)
    calls = ", ".join(f"'{c}'" for c in WAKER_CALLS)   # constants, not input
    return _Part("waker_call", Syscall, _SYSCALL_COLS,
                 f"FROM syscall WHERE ts >= {int(min(wakes)) - WAKER_CALL_LOOKBACK_NS} AND ts <= {int(max(wakes)) + e} "
                 f"AND syscall IN ({calls}) AND ({cond})")


def _related_parts(new: set[int], ports: set[tuple[int, int]], wakes: list[int], lo: int, hi: int) -> list[_Part]:
    """A later round's reads, one branch per table: each branch costs chDB a few ms whatever it reads.

    The new processes' socket I/O and the peers' go in one sock_io branch (tagged
    ``peer_sock``), their syscalls and the wake calls in one syscall branch (tagged
    ``waker_call``); the processes those name that are already fetched are ignored.
    """
    parts = []
    own = _process_parts(new, lo, hi) if new else []
    if own:
        parts.append(own[0])
    sock = [own[2].source.removeprefix("FROM sock_io WHERE ")] if own else []
    if ports:
        sock.append(_peer_part(ports, lo, hi).source.removeprefix("FROM sock_io WHERE "))
    if sock:
        parts.append(_Part("peer_sock", SockIO, _SOCK_COLS, "FROM sock_io WHERE " + " OR ".join(f"({c})" for c in sock)))
    calls = [own[1].source.removeprefix("FROM syscall WHERE ")] if own else []
    if wakes:
        calls.append(_waker_call_part(wakes).source.removeprefix("FROM syscall WHERE "))
    if calls:
        parts.append(_Part("waker_call", Syscall, _SYSCALL_COLS,
                           "FROM syscall WHERE " + " OR ".join(f"({c})" for c in calls)))
    return parts


def _merge(ev: Evidence, got: dict[str, list]) -> set[int]:
    """Add a round's rows to the evidence; returns the processes first seen as peers or wake-call issuers."""
    ev.add_offcpu(got.get("offcpu", []))
    lo = ev.interval.start_ns
    # successful closes (round 0 reads the victim's, from any time) become path '' so a reused fd
    # number is not named after an old file; the opens may come in a later round
    closes = [FdOpen(r.tgid, r.fd, r.ts, "") for r in got.get("syscall", []) if r.syscall == "close" and r.ret == 0]
    if closes or got.get("fd_open"):
        ev.fd_open = sorted(got.get("fd_open", []) + ev.fd_open + closes, key=lambda f: f.ts)
    have_calls = {r for v in ev.syscalls.values() for r in v}
    calls = [r for r in got.get("syscall", []) + got.get("waker_call", []) if r not in have_calls and r.end_ts >= lo]
    ev.add_syscalls(list(dict.fromkeys(calls)))
    have = set(ev.sock_io)
    socks = [s for s in got.get("sock_io", []) + got.get("peer_sock", []) if s not in have]
    ev.sock_io.extend(dict.fromkeys(socks))
    ev.faults.extend(got.get("fault", []))
    ev.reclaims.extend(sorted(got.get("reclaim", []), key=lambda r: r.ts))
    ev.block_io.extend(sorted(got.get("block_io", []), key=lambda r: r.ts))
    ev.retrans.extend(sorted(got.get("tcp_retrans", []), key=lambda r: r.ts))
    for r in got.get("reclaim", []) + got.get("block_io", []):
        ev.note_comm(r.tgid, r.tid, r.ts, r.comm)
    if "reclaim_total" in got:
        ev.reclaim_totals = got["reclaim_total"]
        for t in ev.reclaim_totals:
            ev.note_comm(t.tgid, 0, 0, t.comm)     # lowest rank: a row of the process names it better
    return {s.tgid for s in got.get("peer_sock", [])} | {r.tgid for r in got.get("waker_call", [])}


def fetch_evidence(store: Store, interval: Interval, max_rounds: int = MAX_ROUNDS) -> Evidence:
    """All rows for ``interval`` in at most 1 + ``max_rounds`` SQL statements.

    Round 0 reads the victim's tables and the system-wide ones. Each later round
    reads, in one statement, the tables of the processes the previous round
    named (wakers, TCP peers, issuers of the wake-up calls of idle-recorded
    wakes) together with the next peers and wake calls to look up, so the chain
    is followed across processes without one query per process. A round adds at
    most MAX_RELATED_PER_ROUND processes; what the bound cut is noted.
    """
    ev = Evidence(interval)
    lo, hi = interval.start_ns, interval.end_ns
    ev.fetched_tgids.add(interval.tgid)
    found = _merge(ev, _round(store, ev, _victim_parts(interval)))
    asked_ports: set[tuple[int, int]] = set()
    asked_wakes: set[int] = set()
    have_tables: set[str] = set()
    for _ in range(max_rounds):
        new = (found | _related_tgids(ev)) - ev.fetched_tgids - {0}
        if len(new) > MAX_RELATED_PER_ROUND:
            ev.truncated.append(f"related processes: {len(new)} found, {MAX_RELATED_PER_ROUND} followed")
            new = set(sorted(new)[:MAX_RELATED_PER_ROUND])
        # peers of known connections; an end whose rows we already hold needs no lookup
        known_ends = {(s.sport, s.dport) for s in ev.sock_io}
        ports = {(s.dport, s.sport) for s in ev.sock_io
                 if (s.tgid in ev.fetched_tgids or s.tgid in new) and s.dport and s.sport} - asked_ports - known_ends
        wakes = [w for w in unknown_wakes(ev) if w not in asked_wakes]
        tables = _needs(ev) - have_tables
        parts = _related_parts(new, ports, wakes, lo, hi) + _deferred_parts(ev, tables)
        if not parts:
            break
        asked_ports |= ports
        asked_wakes.update(wakes)
        have_tables |= tables
        ev.fetched_tgids |= new
        found = _merge(ev, _round(store, ev, parts))
    if tables := _needs(ev) - have_tables:
        # the last round brought a disk or socket wait: one more statement, for those tables only
        _merge(ev, _round(store, ev, _deferred_parts(ev, tables)))
    _name_wakers(ev)
    return ev


def _name_wakers(ev: Evidence) -> None:
    """Fill comms for processes only seen as wakers/preemptors, so culprits have names.

    Same rule as ``Evidence.note_comm`` (main thread first, then the latest name); a
    process whose own rows were fetched is already named by them.
    """
    for rows in list(ev.offcpu.values()):
        for r in rows:
            for tgid, tid, ts, comm in ((r.waker_tgid, r.waker_tid, r.wake_ts, r.waker_comm),
                                        (r.preemptor_tgid, r.preemptor_tid, r.ts, r.preemptor_comm)):
                if tgid not in ev.fetched_tgids:
                    ev.note_comm(tgid, tid, ts, comm)
