"""The only part of the causal analysis that talks to the store (the records it fills: records.py; the row
conditions, as SQL and as predicates: conditions.py).

It pulls, usually in ONE SQL statement, every row the pure analysis may need for
one interval, and hands back plain records (an ``Evidence`` bundle) so that
``analyze`` stays testable on hand-built data and independent of chDB or
ClickHouse. Related processes (wakers, socket peers) are followed in a few
bounded rounds, run on the rows of that statement in memory (or, for a window
too big to read whole, on the store: one statement per round, not one per process).

Only integers are ever interpolated into SQL, and only after ``int()``.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from kprobe.causal.conditions import Cond, all_of, any_of, between, calls_in, overlap, tgids_in
from kprobe.causal.model import Interval
from kprobe.causal.records import (
    DISK_WAIT_CALLS,
    IRQ_AFTER_NS,
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
    Fault,
    FdOpen,
    MemcgMember,
    OffCpu,
    Reclaim,
    ReclaimTotal,
    Retrans,
    SockIO,
    Store,
    Syscall,
    reclaim_totals,
)

MAX_ROUNDS = 3            # rounds of "fetch the processes that woke/served the ones we have"
MAX_RELATED_PER_ROUND = 32
ROW_LIMIT = 200_000       # per query: a guard against a system-wide recording of a huge window


def _i(v: Any) -> int:
    """Every value arrives as text (one array type for every table in a round); numbers go through here."""
    return int(v) if v not in (None, "") else 0


def _s(v: Any) -> str:
    return "" if v is None else str(v)


LOOKBACK_NS = 600_000_000_000   # rows of time-ordered tables starting this long before the window are not read
WINDOW_ROW_LIMIT = 200_000  # per table: a window read holding more falls back to the targeted rounds (a 10 s window
                            # of a busy 2-CPU host holds ~40k off-CPU rows; its rounds on the store took seconds)


_CLOSED = Cond("syscall = 'close' AND ret = 0", lambda r: r.syscall == "close" and r.ret == 0)


@dataclass(frozen=True)
class _Part:
    """One table read of a round: a tag naming what the rows are, their record type and columns, the condition.

    ``tail`` follows the WHERE in SQL (GROUP BY); ``pick`` replaces the row-wise
    condition for rows in memory where one row's fate depends on others
    (aggregates, "latest per fd").
    """

    tag: str
    cls: type
    cols: tuple[str, ...]
    table: str
    cond: Cond
    tail: str = ""
    pick: Callable[[list], list] | None = None
    tgids: frozenset[int] | None = None     # the condition keeps rows of these processes only (an index's key)


def _sql(parts: list[_Part], limit: int) -> str:
    """One UNION ALL; each branch formats all its rows as ONE JSON array of arrays (one String column, so the
    branches agree, and one line per branch: splitting and tagging 100k lines in Python cost more than the read)."""
    return " UNION ALL ".join(
        f"(SELECT '{p.tag}', toJSONString(groupArray(r)) FROM (SELECT tuple({', '.join(p.cols)}) AS r "
        f"FROM {p.table} WHERE {p.cond.sql}{p.tail} LIMIT {int(limit)}))" for p in parts
    ) + (" SETTINGS output_format_json_quote_64bit_integers = 0,"
         # planning, not reading, is most of a small window's cost (~5 ms per branch): these plan passes buy
         # nothing for filtered reads of one table each, and indexes are still used (same rows, measured:
         # demo store 67 -> 53 ms, 10M-row store 161 -> 152 ms)
         " optimize_move_to_prewhere = 0, query_plan_enable_optimizations = 0")


def _read(store: Store, ev: Evidence, parts: list[_Part], limit: int) -> dict[str, list]:
    """All of the parts in ONE statement: a chDB query costs a few ms per table before it reads a row.

    Each branch comes back as one "tag<TAB>[[row], ...]" line (JSON escapes tabs
    and newlines inside strings), decoded at once into records.
    """
    out: dict[str, list] = {p.tag: [] for p in parts}
    if not parts:
        return out
    ev.queries += 1
    cls = {p.tag: p.cls for p in parts}
    for line in store.query(_sql(parts, limit), "TabSeparatedRaw").splitlines():
        tag, _, rows = line.partition(b"\t")
        t = tag.decode()
        out[t] = out[t] + msgspec.json.decode(rows, type=list[cls[t]])
    return out


Rounds = Callable[[Evidence, list[_Part]], dict[str, list]]


def _store_rounds(store: Store) -> Rounds:
    def run(ev: Evidence, parts: list[_Part]) -> dict[str, list]:
        got = _read(store, ev, parts, ROW_LIMIT)
        ev.truncated.extend(tag for tag, rows in got.items() if len(rows) >= ROW_LIMIT)
        return got
    return run


@dataclass
class WindowRows:
    """Typed rows already in memory, by table: a window read of the store, or a dataflow's buffered host rows.

    Every table a round may read must hold at least the rows that round's
    condition selects (sorted by ts); ``reclaim_totals``, when known (the SQL
    aggregate of a window read), stands in for summing the context's reclaim rows.
    """

    tables: dict[str, list]
    reclaim_totals: list[ReclaimTotal] | None = None
    _by_tgid: dict[str, dict[int, list]] = field(default_factory=dict)

    def of_tgids(self, table: str, tgids: frozenset[int]) -> list:
        """The table's rows of these processes, by ts: a round for a few processes need not test every row."""
        idx = self._by_tgid.get(table)
        if idx is None:
            idx = {}
            for r in self.tables.get(table, []):
                idx.setdefault(r.tgid, []).append(r)
            self._by_tgid[table] = idx
        got = [r for t in tgids for r in idx.get(t, ())]
        return sorted(got, key=lambda r: r.ts) if len(tgids) > 1 else got


def memory_rounds(rows: WindowRows) -> Rounds:
    def run(ev: Evidence, parts: list[_Part]) -> dict[str, list]:
        out: dict[str, list] = {}
        for p in parts:
            if p.tag == "reclaim_total" and rows.reclaim_totals is not None:
                out[p.tag] = list(rows.reclaim_totals)
                continue
            src = rows.tables.get(p.table, []) if p.tgids is None else rows.of_tgids(p.table, p.tgids)
            got = p.pick(src) if p.pick else [r for r in src if p.cond.keep(r)]
            if len(got) > ROW_LIMIT:
                ev.truncated.append(p.tag)
                got = got[:ROW_LIMIT]
            out[p.tag] = got
        return out
    run.in_memory = True       # type: ignore[attr-defined]  # a round costs no statement: batch what can wait
    return run


_OFFCPU_COLS = ("tgid", "tid", "comm", "ts", "end_ts", "wake_ts", "reason", "cpu_off", "cpu_on", "preemptor_tgid",
                "preemptor_tid", "preemptor_comm", "waker_tgid", "waker_tid", "waker_comm", "displaced_tgid",
                "displaced_tid", "displaced_comm", "displaced_since", "preemptor_process", "waker_process",
                "displaced_process", "syscall", "fd", "skaddr", "saddr", "sport", "daddr", "dport", "dev")
_SYSCALL_COLS = ("tgid", "tid", "syscall", "fd", "ts", "end_ts", "ret", "bytes", "dev")
_SOCK_COLS = ("tgid", "tid", "ts", "skaddr", "dir", "bytes", "saddr", "sport", "daddr", "dport")
_FAULT_COLS = ("tgid", "tid", "ts", "count")
_RECLAIM_COLS = ("tgid", "tid", "comm", "kind", "ts", "end_ts", "nr_reclaimed", "cpu", "cgroup_id")
_BLOCK_COLS = ("tgid", "tid", "comm", "ts", "end_ts", "bytes", "rwbs", "dev")
BLOCK_BUCKET_NS = 1_000_000
# block requests summed per process, device and millisecond of issue: a disk flood issues tens of thousands
# in a window, and a disk wait's culprit only needs who issued how much to which device, and when
_BLOCK_AGG_COLS = ("tgid", "any(tid)", "any(comm)", "min(ts)", "max(end_ts)", "sum(bytes)", "any(rwbs)", "dev")
_BLOCK_AGG_TAIL = f" GROUP BY tgid, dev, intDiv(ts, {BLOCK_BUCKET_NS})"


def _block_part(lo: int, hi: int) -> _Part:
    """Block I/O overlapping the window, in per-millisecond sums (the same rows whether read whole or in rounds)."""
    return _Part("block_io", BlockIO, _BLOCK_AGG_COLS, "block_io", overlap(lo, hi, LOOKBACK_NS), tail=_BLOCK_AGG_TAIL)
_RETRANS_COLS = ("ts", "skaddr", "saddr", "sport", "daddr", "dport")
_MEMBER_COLS = ("cgroup_id", "ts", "tgid", "comm", "rss_anon", "rss_shmem", "read_bytes + write_bytes", "memcg_usage",
                "memcg_limit", "memcg_file", "memcg_dirty", "memcg_writeback", "cgroup")
MEMBER_SNAPSHOT_LAG_NS = 3_000_000_000   # a stall's snapshot may be taken this long after it ended (next drain)
_CGROUP_CPU_COLS = ("cgroup_id", "ts", "cgroup", "quota_us", "period_us", "nr_periods", "nr_throttled", "throttled_ns",
                    "usage_ns", "tgid", "comm", "cpu_ns")
THROTTLE_BEFORE_NS = 11_000_000_000   # an idle quota cgroup is written every 10 s: its last sample before the window


def _cgroup_cpu_part(lo: int, hi: int) -> _Part:
    """Samples of CPU-quota cgroups around the window (system-wide: a few rows per throttled cgroup per second)."""
    return _Part("cgroup_cpu", CgroupCpu, _CGROUP_CPU_COLS, "cgroup_cpu",
                 between(lo - THROTTLE_BEFORE_NS, hi + THROTTLE_AFTER_NS))


_CPU_IRQ_COLS = ("cpu", "ts", "irq_ns", "softirq_ns", "hi", "timer", "net_tx", "net_rx", "block", "irq_poll", "tasklet",
                 "sched", "hrtimer", "rcu")
IRQ_BEFORE_NS = 11_000_000_000        # quiet CPUs' counters are written every 10 s: the last sample before the window


def _cpu_irq_part(lo: int, hi: int) -> _Part:
    """Per-CPU interrupt counters around the window (system-wide: one row per CPU per second while busy)."""
    return _Part("cpu_irq", CpuIrq, _CPU_IRQ_COLS, "cpu_irq", between(lo - IRQ_BEFORE_NS, hi + IRQ_AFTER_NS))


def _member_part(lo: int, hi: int) -> _Part:
    """Snapshots of memcgs in reclaim from the reclaim context before the window to shortly after it."""
    return _Part("memcg_members", MemcgMember, _MEMBER_COLS, "memcg_members",
                 between(lo - RECLAIM_CONTEXT_NS, hi + MEMBER_SNAPSHOT_LAG_NS))


def _process_parts(tgids: set[int], lo: int, hi: int) -> list[_Part]:
    """Per-process tables (ordered by tgid, tid, ts: the tgid list prunes by primary key)."""
    return [
        _Part("offcpu", OffCpu, _OFFCPU_COLS, "offcpu", all_of(tgids_in(tgids), overlap(lo, hi)),
              tgids=frozenset(tgids)),
        _Part("syscall", Syscall, _SYSCALL_COLS, "syscall", all_of(tgids_in(tgids), overlap(lo, hi)),
              tgids=frozenset(tgids)),
        _Part("sock_io", SockIO, _SOCK_COLS, "sock_io", all_of(tgids_in(tgids), between(lo, hi)),
              tgids=frozenset(tgids)),
    ]


def _reclaim_total_part(lo: int, hi: int) -> _Part:
    """The context before the window only ranks reclaimers: totals, not thousands of rows (``reclaim_totals``)."""
    clo, hi = int(lo) - RECLAIM_CONTEXT_NS, int(hi)
    cond = overlap(clo, hi, LOOKBACK_NS)
    return _Part("reclaim_total", ReclaimTotal,
                 ("tgid", "cgroup_id", "argMax(comm, ts)",
                  f"sum(greatest(0, toInt64(least(end_ts, {hi})) - toInt64(greatest(ts, {clo}))))", "sum(nr_reclaimed)"),
                 "reclaim", cond, tail=" GROUP BY tgid, cgroup_id",
                 pick=lambda rows: reclaim_totals([r for r in rows if cond.keep(r)], clo, hi))


def _victim_parts(iv: Interval) -> list[_Part]:
    """Round 0: the victim's own tables plus system-wide reclaim (any thread's time may be reclaim).

    Block I/O and retransmits are system-wide too, but only some waits read them:
    those are fetched by ``_deferred_parts`` once the evidence shows such a wait.
    """
    lo, hi, tg = iv.start_ns, iv.end_ns, int(iv.tgid)
    offcpu, _, sock = _process_parts({tg}, lo, hi)
    return [offcpu, sock,
            # the window's syscalls, and every earlier successful close: with the opens they name an fd at any time
            _Part("syscall", Syscall, _SYSCALL_COLS, "syscall",
                  all_of(tgids_in({tg}), Cond(f"ts <= {int(hi)}", lambda r: r.ts <= hi),
                         any_of(Cond(f"end_ts >= {int(lo)}", lambda r: r.end_ts >= lo), _CLOSED)),
                  tgids=frozenset({tg})),
            _Part("fault", Fault, _FAULT_COLS, "fault", all_of(tgids_in({tg}), between(lo, hi)),
                  tgids=frozenset({tg})),
            _fd_open_part(tg, hi),
            _Part("reclaim", Reclaim, _RECLAIM_COLS, "reclaim", overlap(lo, hi, LOOKBACK_NS)),
            _reclaim_total_part(lo, hi), _cgroup_cpu_part(lo, hi), _cpu_irq_part(lo, hi)]


FD_OPENS_PER_FD = 64     # an fd reopened more often than this before the window's end is named by its latest 64


def _fd_open_part(tg: int, hi: int) -> _Part:
    """The victim's fd paths at any time up to the window's end: per fd, its latest opens.

    A service opens hundreds of files at start-up and some per request: reading
    each fd's latest FD_OPENS_PER_FD opens (``LIMIT n BY fd``, one table read) names
    every fd in the window unless it was reopened more often than that meanwhile.
    """
    tg, hi, n = int(tg), int(hi), FD_OPENS_PER_FD

    def pick(rows: list) -> list:
        per: dict[int, list] = {}
        for r in rows:
            if r.tgid == tg and r.ts <= hi:
                per.setdefault(r.fd, []).append(r)
        return sorted((r for v in per.values() for r in sorted(v, key=lambda r: r.ts)[-n:]), key=lambda r: r.ts)

    return _Part("fd_open", FdOpen, ("tgid", "fd", "ts", "path"), "fd_open",
                 Cond(f"tgid = {tg} AND ts <= {hi}", lambda r: r.tgid == tg and r.ts <= hi),
                 tail=f" ORDER BY fd, ts DESC LIMIT {n} BY fd", pick=pick)


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
            or any(r.syscall in DISK_WAIT_CALLS for calls in (ev.syscalls, ev.blocked_calls)
                   for v in calls.values() for r in v)):
        out.add("block_io")
    if any(r.kind == "memcg" for r in ev.reclaims):
        out.add("memcg_members")
    return out


def _deferred_parts(ev: Evidence, tables: set[str]) -> list[_Part]:
    lo, hi = ev.interval.start_ns, ev.interval.end_ns
    parts = []
    if "block_io" in tables:
        parts.append(_block_part(lo, hi))
        parts.append(_Part("disk_waits", Syscall, _SYSCALL_COLS, "syscall",
                           all_of(calls_in(DISK_WAIT_CALLS), overlap(lo, hi))))
        # and where no hook times syncs (the default policy): their blocked stretches, read at switch-out
        parts.append(_Part("disk_waits_blocked", OffCpu, _OFFCPU_COLS, "offcpu",
                           all_of(calls_in(DISK_WAIT_CALLS), overlap(lo, hi))))
    if "tcp_retrans" in tables:
        parts.append(_Part("tcp_retrans", Retrans, _RETRANS_COLS, "tcp_retrans", between(lo, hi)))
    if "memcg_members" in tables:
        parts.append(_member_part(lo, hi))
    return parts


def _peers(ports: set[tuple[int, int]]) -> Cond:
    """The other end of known connections: their local port is our remote port and vice versa."""
    want = sorted(ports)[:64]
    s = frozenset(want)
    return Cond(" OR ".join(f"(sport = {int(a)} AND dport = {int(b)})" for a, b in want),
                 lambda r: (r.sport, r.dport) in s)


def _related_tgids(ev: Evidence) -> dict[int, int]:
    """Processes whose own delays may explain a fetched thread's wait, its wakers, with the blocked time inside
    the window they ended: on a busy host every process wakes some other, and the ones that ended the
    most waiting are the ones a chain can run through."""
    lo, hi = ev.interval.start_ns, ev.interval.end_ns
    out: dict[int, int] = {}
    for rows in ev.offcpu.values():
        for r in rows:
            if r.reason != "preempted" and r.waker_tgid and r.waker_tgid not in ev.fetched_tgids:
                w = max(0, min(r.wake_ts or r.end_ts, hi) - max(r.ts, lo))
                out[r.waker_tgid] = out.get(r.waker_tgid, 0) + w
    return out


RELATED_MIN_SHARE = 0.01   # a waker that ended less than 1% of the top waker's waiting is not followed


def _pick_related(found: set[int], weights: dict[int, int], fetched: set[int], ev: Evidence) -> set[int]:
    """This round's processes: every socket peer or wake-call issuer found, then the wakers that ended the most
    waiting, while they ended at least RELATED_MIN_SHARE of the top one's; MAX_RELATED_PER_ROUND in all."""
    cand = (found | set(weights)) - fetched - {0}
    top = max((w for t, w in weights.items() if t in cand), default=0)
    ranked = sorted(cand, key=lambda t: (t not in found, -weights.get(t, 0), t))
    keep = [t for t in ranked if t in found or weights.get(t, 0) >= RELATED_MIN_SHARE * top]
    if len(keep) < len(cand):
        ev.truncated.append(f"related processes: {len(cand)} found, {min(len(keep), MAX_RELATED_PER_ROUND)} "
                            f"followed (the wakers that ended the most waiting)")
    elif len(keep) > MAX_RELATED_PER_ROUND:
        ev.truncated.append(f"related processes: {len(cand)} found, {MAX_RELATED_PER_ROUND} followed")
    return set(keep[:MAX_RELATED_PER_ROUND])


WAKER_CALL_LOOKBACK_NS = 10_000_000_000   # wake-type calls are short; this bound lets the ts key prune
WAKE_SLACK_NS = 100_000_000   # wake-ups this far outside the window are still looked into (a window read covers it)


def unknown_wakes(ev: Evidence, min_blocked_ns: int = 1_000_000, limit: int = 32) -> list[int]:
    """Wake times of long blocked intervals whose waker the kernel recorded as the idle task (pid 0).

    sched_wakeup fires on the target CPU for queued (IPI) wake-ups, so the task
    current there, often idle, is recorded instead of the real waker; the real
    waker's wake syscall (futex wake, pipe write, send) brackets that time. Only
    wake-ups within WAKE_SLACK_NS of the window are looked into.
    """
    lo, hi = ev.interval.start_ns - WAKE_SLACK_NS, ev.interval.end_ns + WAKE_SLACK_NS
    cand = []
    for rows in ev.offcpu.values():
        for r in rows:
            if (r.reason != "preempted" and r.wake_ts and r.waker_tgid == 0 and r.wake_ts - r.ts >= min_blocked_ns
                    and lo <= r.wake_ts <= hi):
                cand.append((r.wake_ts - r.ts, r.wake_ts))
    cand.sort(reverse=True)
    return sorted({w for _, w in cand[:limit]})


def _wake_calls(wakes: list[int]) -> Cond:
    """Other processes' wake-type syscalls bracketing those wake times: the candidates for the real waker."""
    e = WAKE_EPS_NS
    ws = sorted(int(w) for w in wakes)
    first, last = min(ws) - WAKER_CALL_LOOKBACK_NS, max(ws) + e

    def near_keep(r: Any) -> bool:     # some wake time in [ts - e, end_ts + e]: the first one >= ts - e decides
        i = bisect_left(ws, r.ts - e)
        return i < len(ws) and ws[i] <= r.end_ts + e

    near = Cond(" OR ".join(f"(ts <= {w + e} AND end_ts >= {w - e})" for w in ws), near_keep)
    return all_of(Cond(f"ts >= {first} AND ts <= {last}", lambda r: first <= r.ts <= last), calls_in(WAKER_CALLS),
                  near)


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
    sock = [own[2].cond] if own else []
    if ports:
        sock.append(all_of(between(lo, hi), _peers(ports)))
    if sock:
        parts.append(_Part("peer_sock", SockIO, _SOCK_COLS, "sock_io", any_of(*sock)))
    calls = [own[1].cond] if own else []
    if wakes:
        calls.append(_wake_calls(wakes))
    if calls:
        parts.append(_Part("waker_call", Syscall, _SYSCALL_COLS, "syscall", any_of(*calls)))
    return parts


def _merge(ev: Evidence, got: dict[str, list]) -> set[int]:
    """Add a round's rows to the evidence; returns the processes first seen as peers or wake-call issuers."""
    ev.add_offcpu(got.get("offcpu", []))
    lo = ev.interval.start_ns
    # successful closes (round 0 reads the victim's, from any time) become path '' so a reused fd
    # number is not named after an old file
    closes = [FdOpen(r.tgid, r.fd, r.ts, "") for r in got.get("syscall", []) if r.syscall == "close" and r.ret == 0]
    if closes or got.get("fd_open"):
        ev.fd_open = sorted(got.get("fd_open", []) + ev.fd_open + closes, key=lambda f: f.ts)
    have_calls = {r for v in ev.syscalls.values() for r in v}
    calls = [r for r in got.get("syscall", []) + got.get("waker_call", []) if r not in have_calls and r.end_ts >= lo]
    ev.add_syscalls(list(dict.fromkeys(calls)))
    have = set(ev.sock_io)
    socks = [s for s in got.get("sock_io", []) + got.get("peer_sock", []) if s not in have]
    ev.sock_io.extend(dict.fromkeys(socks))
    _calls_from_offcpu(ev, got.get("offcpu", []))
    ev.faults.extend(got.get("fault", []))
    ev.reclaims.extend(sorted(got.get("reclaim", []), key=lambda r: r.ts))
    ev.block_io.extend(sorted(got.get("block_io", []), key=lambda r: r.ts))
    blocked_syncs = [Syscall(o.tgid, o.tid, o.syscall, o.fd, o.ts, o.end_ts, 0, 0, o.dev)
                     for o in got.get("disk_waits_blocked", ())]
    if got.get("disk_waits") or blocked_syncs:
        ev.disk_waits = sorted([*ev.disk_waits, *got.get("disk_waits", ()), *blocked_syncs], key=lambda r: r.ts)
    ev.retrans.extend(sorted(got.get("tcp_retrans", []), key=lambda r: r.ts))
    ev.memcg_members.extend(sorted(got.get("memcg_members", []), key=lambda r: r.ts))
    ev.cgroup_cpu.extend(sorted(got.get("cgroup_cpu", []), key=lambda r: r.ts))
    ev.cpu_irq.extend(sorted(got.get("cpu_irq", []), key=lambda r: r.ts))
    for r in got.get("reclaim", []) + got.get("block_io", []):
        ev.note_comm(r.tgid, r.tid, r.ts, r.comm)
    if "reclaim_total" in got:
        ev.reclaim_totals = got["reclaim_total"]
        for t in ev.reclaim_totals:
            ev.note_comm(t.tgid, 0, 0, t.comm)     # lowest rank: a row of the process names it better
    return {s.tgid for s in got.get("peer_sock", [])} | {r.tgid for r in got.get("waker_call", [])}


def _calls_from_offcpu(ev: Evidence, rows: list[OffCpu]) -> None:
    """The call each off-CPU row blocked in, and the socket behind its fd, as records.

    Bounded system-wide capture runs no program on every syscall: the sched probe
    reads the call a thread blocks in from its registers, and the socket behind its fd,
    so a blocked recvfrom is explained like a traced one. A call record spans the
    blocked part of the call only (its entry was not seen) and is kept apart from the
    traced calls, which win where both exist. Each record depends on its row alone, so
    the evidence is the same whatever order the rounds bring rows in.
    """
    new: dict[int, list[Syscall]] = {}
    for o in rows:
        if o.syscall:
            new.setdefault(o.tid, []).append(Syscall(o.tgid, o.tid, o.syscall, o.fd, o.ts, o.end_ts, 0, 0, o.dev))
    for tid, calls in new.items():     # a set per thread: a busy window holds thousands of rows
        have = ev.blocked_calls.setdefault(tid, [])
        seen = set(have)
        have.extend(c for c in dict.fromkeys(calls) if c not in seen)
        have.sort(key=lambda r: r.ts)
    socks = [SockIO(o.tgid, o.tid, o.ts, o.skaddr, "recv", 0, o.saddr, o.sport, o.daddr, o.dport)
             for o in rows if o.skaddr]
    if socks:
        have_socks = set(ev.sock_io)
        ev.sock_io.extend(dict.fromkeys(k for k in socks if k not in have_socks))


def _window_parts(iv: Interval) -> list[_Part]:
    """Every row any round may select for ``iv``, system-wide, one branch per table.

    Each table's branches together hold every row the rounds' conditions can
    select (any tgid, any peer port, wake calls within WAKE_SLACK_NS), so the
    rounds then run on these rows in memory and select exactly what they would
    have read from the store. Every branch is bounded in time on both sides (or
    by the victim's tgid), so the time indexes and the key prune the read.
    """
    lo, hi, tg = iv.start_ns, iv.end_ns, int(iv.tgid)
    s = WAKE_SLACK_NS + WAKE_EPS_NS
    victim = {p.tag: p for p in _victim_parts(iv)}
    before = lo - s
    return [
        _Part("offcpu", OffCpu, _OFFCPU_COLS, "offcpu", overlap(lo - CPU_ROWS_BEFORE_NS, hi)),
        _Part("syscall", Syscall, _SYSCALL_COLS, "syscall",
              any_of(overlap(lo, hi), all_of(calls_in(WAKER_CALLS), overlap(lo - s, hi + s)))),
        # the victim's successful closes that ended before those (they name its fds); disjoint from the above
        _Part("syscall_before", Syscall, _SYSCALL_COLS, "syscall",
              all_of(tgids_in({tg}), _CLOSED, Cond(f"end_ts < {before}", lambda r: r.end_ts < before))),
        _Part("sock_io", SockIO, _SOCK_COLS, "sock_io", between(lo, hi)),
        victim["fault"], victim["fd_open"], victim["reclaim"], victim["reclaim_total"], victim["cgroup_cpu"],
        victim["cpu_irq"],
        _block_part(lo, hi),
        # (the disk_waits branch of a round reads syscall rows: the syscall branch above holds them)
        _Part("tcp_retrans", Retrans, _RETRANS_COLS, "tcp_retrans", between(lo, hi)),
        _member_part(lo, hi),
    ]


def read_window(store: Store, ev: Evidence, limit: int = WINDOW_ROW_LIMIT) -> WindowRows | None:
    """One statement for everything the rounds may need; None when a table holds ``limit`` rows or more.

    On a busy host or a long window the system-wide rows are too many to move:
    then the rounds read the store instead, process by process.
    """
    if limit <= 0:
        return None
    got = _read(store, ev, _window_parts(ev.interval), limit)
    if any(len(rows) >= limit for rows in got.values()):
        return None
    totals = got.pop("reclaim_total")
    got["syscall"] += got.pop("syscall_before")
    for rows in got.values():
        rows.sort(key=lambda r: r.ts)
    return WindowRows(got, totals)


def select_evidence(ev: Evidence, run: Rounds, max_rounds: int = MAX_ROUNDS) -> Evidence:
    """Fill ``ev`` in at most 1 + ``max_rounds`` rounds (+1 for a late disk or socket wait).

    Round 0 reads the victim's tables and the system-wide ones. Each later round
    reads the tables of the processes the previous round named (wakers, TCP
    peers, issuers of the wake-up calls of idle-recorded wakes) together with the
    next peers and wake calls to look up, so the chain is followed across
    processes. A round adds at most MAX_RELATED_PER_ROUND processes; what the
    bound cut is noted. ``run`` executes a round on the store or on rows in memory.
    """
    interval = ev.interval
    lo, hi = interval.start_ns, interval.end_ns
    ev.fetched_tgids.add(interval.tgid)
    found = _merge(ev, run(ev, _victim_parts(interval)))
    asked_ports: set[tuple[int, int]] = set()
    asked_wakes: set[int] = set()
    asked_waits: set[tuple[int, int]] = set()     # (tid, ts) of the rows whose run-queue waits were read around
    in_memory = getattr(run, "in_memory", False)
    have_tables: set[str] = set()
    for _ in range(max_rounds):
        new = _pick_related(found, _related_tgids(ev), ev.fetched_tgids, ev)
        # peers of known connections; an end whose rows we already hold needs no lookup
        known_ends = {(s.sport, s.dport) for s in ev.sock_io}
        ports = {(s.dport, s.sport) for s in ev.sock_io
                 if (s.tgid in ev.fetched_tgids or s.tgid in new) and s.dport and s.sport} - asked_ports - known_ends
        wakes = [w for w in unknown_wakes(ev) if w not in asked_wakes]
        tables = _needs(ev) - have_tables
        parts = _related_parts(new, ports, wakes, lo, hi) + _deferred_parts(ev, tables)
        if not parts:
            break
        # on the store, the run-queue waits' CPUs ride along in this round's statement; in memory, rows cost no
        # statement and are read once, after the last round (each pass tests every row of the window)
        if not in_memory and (cpu_part := _cpu_rows_part(ev, asked_waits)) is not None:
            parts.append(cpu_part)
        asked_ports |= ports
        asked_wakes.update(wakes)
        have_tables |= tables
        ev.fetched_tgids |= new
        got = run(ev, parts)
        found = _merge(ev, got)
        _merge_cpu_rows(ev, got.get("cpu_rows", []))
    if tables := _needs(ev) - have_tables:
        # the last round brought a disk or socket wait: one more round, for those tables only
        _merge(ev, run(ev, _deferred_parts(ev, tables)))
    if (part := _cpu_rows_part(ev, asked_waits)) is not None:
        # the last round brought run-queue waits: the rows on their CPUs, in one more statement
        _merge_cpu_rows(ev, run(ev, [part]).get("cpu_rows", []))
    have = set(ev.offcpu)       # a fetched thread's rows over the window are all there already
    ev.cpu_rows = [r for r in ev.cpu_rows if r.tid not in have]
    _name_wakers(ev)
    return ev


RUNQ_ROWS_MIN_NS = 1_000_000   # run-queue waits shorter than this do not need every thread's rows on their CPU
MAX_CPU_SEGMENTS = 64          # run-queue waits read as at most this many (merged) time ranges per statement
# a switch this long before a wait still names who held the CPU at its start (analyze: runners); the window
# read's off-CPU rows reach back as far, so the rounds in memory find it too
CPU_ROWS_BEFORE_NS = STALE_SWITCH_NS


def runq_segments(ev: Evidence, asked: set[tuple[int, int]]) -> dict[int, list[tuple[int, int]]]:
    """Per CPU, the merged time ranges where fetched threads waited runnable for a CPU nobody was recorded as
    taking: after a wake-up (the row's preemptor was who ran when the thread left, not when it was woken)
    and a preempted thread that came back on another CPU (it queued there behind that CPU's holder). Rows
    in ``asked`` ((tid, ts)) were looked into by an earlier round; the others are added to it."""
    lo, hi = ev.interval.start_ns, ev.interval.end_ns
    per: dict[int, list[tuple[int, int]]] = {}
    for rows in ev.offcpu.values():
        for r in rows:
            if (r.tid, r.ts) in asked:
                continue
            asked.add((r.tid, r.ts))
            if r.reason == "preempted":
                # moved to another CPU, or long: who held the CPU meanwhile, not only who cut in, is asked
                a = r.ts if r.cpu_off != r.cpu_on or r.end_ts - r.ts >= LONG_PREEMPTED_NS else r.end_ts
            else:
                a = r.wake_ts or r.end_ts
            a, b = max(a, lo), min(r.end_ts, hi)
            if b - a >= RUNQ_ROWS_MIN_NS:
                per.setdefault(r.cpu_on, []).append((a - CPU_ROWS_BEFORE_NS, b))
    out = {}
    for cpu, segs in per.items():
        merged = _merge_segments(segs)
        gap = 1_000_000
        while len(merged) > MAX_CPU_SEGMENTS:      # a bounded statement: close the smallest gaps first
            merged = _merge_segments(merged, gap)
            gap *= 4
        out[cpu] = merged
    return out


def _merge_segments(segs: list[tuple[int, int]], gap: int = 0) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(segs):
        if out and a <= out[-1][1] + gap:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _on_cpus(per: dict[int, list[tuple[int, int]]]) -> Cond:
    """Off-CPU rows of any thread that left or came back on one of these CPUs inside one of its ranges."""
    sql = " OR ".join(f"((cpu_on = {int(c)} OR cpu_off = {int(c)}) AND end_ts >= {int(a)} AND ts <= {int(b)})"
                      for c, segs in sorted(per.items()) for a, b in segs)
    starts = {c: [a for a, _ in segs] for c, segs in per.items()}

    def hit(cpu: int, r: Any) -> bool:
        segs = per.get(cpu)
        if segs is None:
            return False
        # the last range starting at or before the row's end; ranges are disjoint, so no earlier one ends later
        i = bisect_right(starts[cpu], r.end_ts)
        return i > 0 and segs[i - 1][1] >= r.ts

    def keep(r: Any) -> bool:
        return hit(r.cpu_on, r) or (r.cpu_off != r.cpu_on and hit(r.cpu_off, r))

    return Cond(sql, keep)


def _cpu_rows_part(ev: Evidence, asked: set[tuple[int, int]]) -> _Part | None:
    """Every thread's off-CPU rows on the CPUs and over the times fetched threads waited to run, or None.

    Who held a CPU during a wait is read from the switches recorded there (analyze._Ctx.runners):
    a CPU-bound task never blocks, so it shows only in other threads' rows (as the task that
    switched in when they left, or that they displaced when they came back) and in its own rows
    when it is preempted; the related processes' rows alone miss it whenever it took the CPU from
    an unrelated thread. ONE read of the offcpu table, bounded by CPU and time.
    """
    per = runq_segments(ev, asked)
    if not per:
        return None
    lo = min(a for segs in per.values() for a, _ in segs)
    hi = max(b for segs in per.values() for _, b in segs)
    return _Part("cpu_rows", OffCpu, _OFFCPU_COLS, "offcpu", all_of(overlap(lo, hi), _on_cpus(per)))


def _merge_cpu_rows(ev: Evidence, rows: list[OffCpu]) -> None:
    """Add a round's rows (a row two rounds' ranges both touch comes once: a thread's rows never share a start)."""
    if not rows:
        return
    have = {(r.tid, r.ts) for r in ev.cpu_rows}
    ev.cpu_rows = sorted(ev.cpu_rows + [r for r in rows if (r.tid, r.ts) not in have], key=lambda r: r.ts)


def fetch_evidence(store: Store, interval: Interval, max_rounds: int = MAX_ROUNDS,
                   window_limit: int = WINDOW_ROW_LIMIT) -> Evidence:
    """All rows for ``interval``: usually ONE statement (a window read), else a few targeted rounds.

    chDB spends ~5 ms per table read before it reads a row, so reading each table
    once for the whole window beats following the chain round by round; the
    rounds then run on those rows in memory. A window holding ``window_limit``
    rows or more in some table is followed round by round on the store instead.
    """
    ev = Evidence(interval)
    rows = read_window(store, ev, window_limit)
    return select_evidence(ev, memory_rounds(rows) if rows is not None else _store_rounds(store), max_rounds)


def _name_wakers(ev: Evidence) -> None:
    """Fill comms for processes only seen as wakers/preemptors, so culprits have names.

    Same rule as ``Evidence.note_comm`` (main thread first, then the latest name); a
    process whose own rows were fetched is already named by them. The process name
    recorded beside a thread's (its main thread's comm, in recordings that have it)
    ranks as the main thread's: a hog whose workers rename themselves is still named
    as the process.
    """
    for r in ev.cpu_rows:
        if r.tgid not in ev.fetched_tgids:
            ev.note_comm(r.tgid, r.tid, r.ts, r.comm)
    for rows in [*ev.offcpu.values(), ev.cpu_rows]:
        for r in rows:
            for tgid, tid, ts, comm, process in (
                    (r.waker_tgid, r.waker_tid, r.wake_ts, r.waker_comm, r.waker_process),
                    (r.preemptor_tgid, r.preemptor_tid, r.ts, r.preemptor_comm, r.preemptor_process),
                    (r.displaced_tgid, r.displaced_tid, r.end_ts, r.displaced_comm, r.displaced_process)):
                if tgid not in ev.fetched_tgids:
                    ev.note_comm(tgid, tid, ts, comm)
                    ev.note_comm(tgid, tgid, ts, process)
