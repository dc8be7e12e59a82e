"""Build the causal ``Evidence`` for one operation from a host's buffered rows instead of the store.

This mirrors causal/fetch.py's selection rule for rule (victim rows overlapping the
window, host-wide reclaim, block I/O and retransmits when a wait needs them, then rounds of wakers,
socket peers and inferred wakers), so the flow's answer for an operation is the
one `kprobe why` gives on the stored events. The pure ``analyze`` then runs on it.
"""

from __future__ import annotations

from typing import Any

from kprobe.causal.fetch import (
    MAX_RELATED_PER_ROUND,
    MAX_ROUNDS,
    RECLAIM_CONTEXT_NS,
    WAKE_EPS_NS,
    WAKER_CALLS,
    BlockIO,
    Evidence,
    Fault,
    FdOpen,
    OffCpu,
    Reclaim,
    Retrans,
    SockIO,
    Syscall,
    _i,
    _name_wakers,
    _needs,
    _related_tgids,
    _s,
    reclaim_totals,
    unknown_wakes,
)
from kprobe.causal.model import Interval
from kprobe.dataflows.windowing import HostWindow

Row = dict[str, Any]


def _overlaps(r: Row, lo: int, hi: int) -> bool:
    return _i(r.get("end_ts")) >= lo and _i(r.get("ts")) <= hi


def _in(r: Row, lo: int, hi: int) -> bool:
    return lo <= _i(r.get("ts")) <= hi


def _offcpu(r: Row) -> OffCpu:
    return OffCpu(_i(r["tgid"]), _i(r["tid"]), _s(r["comm"]), _i(r["ts"]), _i(r["end_ts"]), _i(r["wake_ts"]),
                  _s(r["reason"]), _i(r["cpu_off"]), _i(r["cpu_on"]), _i(r["preemptor_tgid"]),
                  _i(r["preemptor_tid"]), _s(r["preemptor_comm"]), _i(r["waker_tgid"]), _i(r["waker_tid"]),
                  _s(r["waker_comm"]))


def _syscall(r: Row) -> Syscall:
    return Syscall(_i(r["tgid"]), _i(r["tid"]), _s(r["syscall"]), int(r["fd"]) if r.get("fd") not in (None, "") else 0,
                   _i(r["ts"]), _i(r["end_ts"]), int(r["ret"]) if r.get("ret") not in (None, "") else 0,
                   _i(r["bytes"]))


def _sock(r: Row) -> SockIO:
    return SockIO(_i(r["tgid"]), _i(r["tid"]), _i(r["ts"]), _i(r["skaddr"]), _s(r["dir"]), _i(r["bytes"]),
                  _s(r["saddr"]), _i(r["sport"]), _s(r["daddr"]), _i(r["dport"]))


def _by_ts(rows: list[Row]) -> list[Row]:
    return sorted(rows, key=lambda r: _i(r.get("ts")))


def _victim_tables(w: HostWindow, ev: Evidence, tgids: set[int], lo: int, hi: int) -> None:
    ev.add_offcpu([_offcpu(r) for r in _by_ts(w.table_rows("offcpu", tgids)) if _overlaps(r, lo, hi)])
    ev.add_syscalls([_syscall(r) for r in _by_ts(w.table_rows("syscall", tgids)) if _overlaps(r, lo, hi)])
    have = set(ev.sock_io)
    ev.sock_io.extend(s for s in (_sock(r) for r in _by_ts(w.table_rows("sock_io", tgids)) if _in(r, lo, hi))
                      if s not in have)


def _sock_peers(w: HostWindow, ev: Evidence, lo: int, hi: int) -> set[int]:
    ports = sorted({(s.dport, s.sport) for s in ev.sock_io if s.tgid in ev.fetched_tgids and s.dport and s.sport})[:64]
    if not ports:
        return set()
    want = set(ports)
    have = set(ev.sock_io)
    new = [s for s in (_sock(r) for r in _by_ts(w.table_rows("sock_io")) if _in(r, lo, hi))
           if (s.sport, s.dport) in want and s not in have]
    ev.sock_io.extend(new)
    return {s.tgid for s in new}


def _waker_calls(w: HostWindow, ev: Evidence, wakes: list[int]) -> set[int]:
    if not wakes:
        return set()
    e = WAKE_EPS_NS
    have = {r for v in ev.syscalls.values() for r in v}
    new = []
    for r in _by_ts(w.table_rows("syscall")):
        if r.get("syscall") in WAKER_CALLS and any(_i(r["ts"]) <= x + e and _i(r["end_ts"]) >= x - e for x in wakes):
            s = _syscall(r)
            if s not in have:
                new.append(s)
    ev.add_syscalls(new)
    return {r.tgid for r in new}


def evidence_from_window(w: HostWindow, interval: Interval, max_rounds: int = MAX_ROUNDS) -> Evidence:
    """The same Evidence fetch_evidence would build from a store holding the window's rows."""
    ev = Evidence(interval)
    lo, hi, tg = interval.start_ns, interval.end_ns, {interval.tgid}
    ev.fetched_tgids |= tg
    _victim_tables(w, ev, tg, lo, hi)
    ev.faults = [Fault(_i(r["tgid"]), _i(r["tid"]), _i(r["ts"]), _i(r["count"]))
                 for r in _by_ts(w.table_rows("fault", tg)) if _in(r, lo, hi)]
    opens = [FdOpen(_i(r["tgid"]), int(r["fd"]), _i(r["ts"]), _s(r["path"]))
             for r in w.table_rows("fd_open", tg) if _i(r["ts"]) <= hi]
    closes = [FdOpen(_i(r["tgid"]), int(r["fd"]), _i(r["ts"]), "") for r in w.table_rows("syscall", tg)
              if r.get("syscall") == "close" and _i(r.get("ret")) == 0 and _i(r["ts"]) <= hi]
    ev.fd_open = sorted(opens + closes, key=lambda f: f.ts)
    # reclaim by others shortly before the window still names the memory hog (as fetch.py reads it)
    context = [Reclaim(_i(r["tgid"]), _i(r["tid"]), _s(r["comm"]), _s(r["kind"]), _i(r["ts"]), _i(r["end_ts"]),
                       _i(r["nr_reclaimed"]), _i(r["cpu"]), _i(r.get("cgroup_id")))
               for r in _by_ts(w.table_rows("reclaim")) if _overlaps(r, lo - RECLAIM_CONTEXT_NS, hi)]
    ev.reclaims = [r for r in context if r.end_ts >= lo and r.ts <= hi]
    ev.reclaim_totals = reclaim_totals(context, lo - RECLAIM_CONTEXT_NS, hi)
    for r in ev.reclaims:
        ev.note_comm(r.tgid, r.tid, r.ts, r.comm)
    for t in ev.reclaim_totals:
        ev.note_comm(t.tgid, 0, 0, t.comm)
    asked: set[int] = set()
    for _ in range(max_rounds):
        wakes = [x for x in unknown_wakes(ev) if x not in asked]
        asked.update(wakes)
        new = _related_tgids(ev) | _sock_peers(w, ev, lo, hi) | _waker_calls(w, ev, wakes)
        new -= ev.fetched_tgids | {0}
        if not new:
            break
        new = set(sorted(new)[:MAX_RELATED_PER_ROUND])
        ev.fetched_tgids |= new
        _victim_tables(w, ev, new, lo, hi)
    # fetch.py reads block I/O and retransmits only once a disk or socket wait needs them: same here, so
    # that the rows naming processes (block I/O comms) are the same ones
    need = _needs(ev)
    if "block_io" in need:
        ev.block_io = [BlockIO(_i(r["tgid"]), _i(r["tid"]), _s(r["comm"]), _i(r["ts"]), _i(r["end_ts"]),
                               _i(r["bytes"]), _s(r["rwbs"]), _i(r.get("dev")))
                       for r in _by_ts(w.table_rows("block_io")) if _overlaps(r, lo, hi)]
        for b in ev.block_io:
            ev.note_comm(b.tgid, b.tid, b.ts, b.comm)
    if "tcp_retrans" in need:
        ev.retrans = [Retrans(_i(r["ts"]), _i(r["skaddr"]), _s(r["saddr"]), _i(r["sport"]), _s(r["daddr"]),
                              _i(r["dport"])) for r in _by_ts(w.table_rows("tcp_retrans")) if _in(r, lo, hi)]
    _name_wakers(ev)
    return ev
