"""Build the causal ``Evidence`` for one operation from a host's buffered rows instead of the store.

The rounds are causal/fetch.py's own (``select_evidence``), run on the window's
rows in memory, so the flow's answer for an operation is the one `kprobe why`
gives on the stored events by construction, not by keeping two copies in step.
The pure ``analyze`` then runs on it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kprobe.causal.fetch import MAX_ROUNDS, WindowRows, _i, _s, memory_rounds, select_evidence
from kprobe.causal.model import Interval
from kprobe.causal.records import (
    BlockIO,
    Evidence,
    Fault,
    FdOpen,
    MemcgMember,
    OffCpu,
    Reclaim,
    Retrans,
    SockIO,
    Syscall,
)
from kprobe.dataflows.windowing import HostWindow

Row = dict[str, Any]


def _offcpu(r: Row) -> OffCpu:
    return OffCpu(_i(r["tgid"]), _i(r["tid"]), _s(r["comm"]), _i(r["ts"]), _i(r["end_ts"]), _i(r["wake_ts"]),
                  _s(r["reason"]), _i(r["cpu_off"]), _i(r["cpu_on"]), _i(r["preemptor_tgid"]),
                  _i(r["preemptor_tid"]), _s(r["preemptor_comm"]), _i(r["waker_tgid"]), _i(r["waker_tid"]),
                  _s(r["waker_comm"]), _i(r.get("displaced_tgid")), _i(r.get("displaced_tid")),
                  _s(r.get("displaced_comm")), _i(r.get("displaced_since")), _s(r.get("preemptor_process")),
                  _s(r.get("waker_process")), _s(r.get("displaced_process")), _s(r.get("syscall")),
                  _i(r.get("fd", -1)), _i(r.get("skaddr")), _s(r.get("saddr")), _i(r.get("sport")),
                  _s(r.get("daddr")), _i(r.get("dport")), _i(r.get("dev")))


def _syscall(r: Row) -> Syscall:
    return Syscall(_i(r["tgid"]), _i(r["tid"]), _s(r["syscall"]), _i(r.get("fd")), _i(r["ts"]), _i(r["end_ts"]),
                   _i(r.get("ret")), _i(r["bytes"]), _i(r.get("dev")))


def _sock(r: Row) -> SockIO:
    return SockIO(_i(r["tgid"]), _i(r["tid"]), _i(r["ts"]), _i(r["skaddr"]), _s(r["dir"]), _i(r["bytes"]),
                  _s(r["saddr"]), _i(r["sport"]), _s(r["daddr"]), _i(r["dport"]))


def _fault(r: Row) -> Fault:
    return Fault(_i(r["tgid"]), _i(r["tid"]), _i(r["ts"]), _i(r["count"]))


def _fd_open(r: Row) -> FdOpen:
    return FdOpen(_i(r["tgid"]), _i(r["fd"]), _i(r["ts"]), _s(r["path"]))


def _reclaim(r: Row) -> Reclaim:
    return Reclaim(_i(r["tgid"]), _i(r["tid"]), _s(r["comm"]), _s(r["kind"]), _i(r["ts"]), _i(r["end_ts"]),
                   _i(r["nr_reclaimed"]), _i(r["cpu"]), _i(r.get("cgroup_id")))


def _block_io(r: Row) -> BlockIO:
    return BlockIO(_i(r["tgid"]), _i(r["tid"]), _s(r["comm"]), _i(r["ts"]), _i(r["end_ts"]), _i(r["bytes"]),
                   _s(r["rwbs"]), _i(r.get("dev")))


def _retrans(r: Row) -> Retrans:
    return Retrans(_i(r["ts"]), _i(r["skaddr"]), _s(r["saddr"]), _i(r["sport"]), _s(r["daddr"]), _i(r["dport"]))


def _memcg_member(r: Row) -> MemcgMember:
    return MemcgMember(_i(r["cgroup_id"]), _i(r["ts"]), _i(r["tgid"]), _s(r["comm"]), _i(r["rss_anon"]),
                       _i(r["rss_shmem"]), _i(r["read_bytes"]) + _i(r["write_bytes"]), _i(r["memcg_usage"]),
                       _i(r["memcg_limit"]), _i(r["memcg_file"]), _i(r["memcg_dirty"]), _i(r["memcg_writeback"]),
                       _s(r.get("cgroup")))


TYPED: dict[str, Callable[[Row], Any]] = {
    "offcpu": _offcpu, "syscall": _syscall, "sock_io": _sock, "fault": _fault, "fd_open": _fd_open,
    "reclaim": _reclaim, "block_io": _block_io, "tcp_retrans": _retrans, "memcg_members": _memcg_member,
}


def window_rows(w: HostWindow) -> WindowRows:
    """The host's buffered rows as the typed records the rounds select from (reclaim totals summed from rows)."""
    tables = {}
    for name, make in TYPED.items():
        rows = [make(r) for r in w.table_rows(name)]
        rows.sort(key=lambda r: r.ts)
        tables[name] = rows
    return WindowRows(tables)


def evidence_from_window(w: HostWindow, interval: Interval, max_rounds: int = MAX_ROUNDS,
                         rows: WindowRows | None = None) -> Evidence:
    """The same Evidence fetch_evidence builds from a store holding the window's rows.

    ``rows`` lets a caller that explains several operations of one window type its rows once.
    """
    return select_evidence(Evidence(interval), memory_rounds(rows or window_rows(w)), max_rounds)
