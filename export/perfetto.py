"""`kprobe export --perfetto`: a recording as a Perfetto trace (TracePacket protobuf) for ui.perfetto.dev.

Layout, so an incident reads the way `kprobe why` tells it:

* one track per process (ProcessDescriptor) and one per thread (ThreadDescriptor) under it; the
  thread track holds the thread's **off-CPU slices** (reason, CPU, run-queue time, the call it
  blocked in, the preemptor, the waker and the task that ran instead, as debug annotations);
* per thread, child tracks for its syscalls, its reclaim stalls and block I/O, and its spans
  (spans of one thread nest; they may straddle off-CPU intervals, so they get their own track);
* **flows** for wake-ups: an instant "wakes …" on the waker's thread at the wake-up, an instant
  "woken by …" on the sleeper's thread, joined by a flow id. A reply over a socket is such a
  wake-up (the server's send wakes the client's recv), so socket hops show as flows too.

Rows are read with ``kprobe.query.events`` (what `kprobe events` reads) and the causal span
lookups; only the encoding is here. Field numbers are those of Perfetto's protos/perfetto/trace
(.proto); tests/api parse the output with Perfetto's own compiled definitions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from kprobe.causal.records import Store
from kprobe.causal.span_chain import SPAN_COLS, SpanLookupError, SpanRef, pick_span, trace_spans, why_span
from kprobe.causal.why import NoDataError
from kprobe.export.protowire import data, fixed64, string, uint
from kprobe.query.events import EventQuery, fetch

# TracePacket
P_TIMESTAMP, P_TRACK_EVENT, P_SEQ_ID, P_SEQ_FLAGS, P_TRACK_DESCRIPTOR = 8, 11, 10, 13, 60
SEQ_INCREMENTAL_STATE_CLEARED = 1
# TrackDescriptor / ProcessDescriptor / ThreadDescriptor
TD_UUID, TD_NAME, TD_PROCESS, TD_THREAD, TD_PARENT = 1, 2, 3, 4, 5
PD_PID, PD_NAME = 1, 6
THD_PID, THD_TID, THD_NAME = 1, 2, 5
# TrackEvent
TE_ANNOTATIONS, TE_TYPE, TE_TRACK, TE_CATEGORIES, TE_NAME, TE_FLOW, TE_FLOW_END = 4, 9, 11, 22, 23, 47, 48
SLICE_BEGIN, SLICE_END, INSTANT = 1, 2, 3
# DebugAnnotation
DA_UINT, DA_INT, DA_STRING, DA_NAME = 3, 4, 6, 10
SEQ = 1
MAX_ROWS = 2_000_000      # per event type: a guard, the count written is printed


def _uuid(*key: object) -> int:
    """A stable 64-bit track id: the same thread gets the same track in every export."""
    return int.from_bytes(hashlib.blake2b(repr(key).encode(), digest_size=8).digest(), "little") >> 1


def _annotation(name: str, value: Any) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int):
        body = string(DA_STRING, str(value))
    elif value < 0:
        body = uint(DA_INT, value)
    else:
        body = uint(DA_UINT, value)
    return data(TE_ANNOTATIONS, string(DA_NAME, name) + body)


def _task(r: dict[str, Any], role: str) -> str:
    comm, proc = r.get(f"{role}_comm") or "", r.get(f"{role}_process") or ""
    name = f"{comm} ({proc})" if proc and proc != comm else comm
    return f"{name} {r.get(f'{role}_tgid')}/{r.get(f'{role}_tid')}"


@dataclass
class Selection:
    pids: list[int] = field(default_factory=list)
    trace_id: str | None = None
    from_ns: int | None = None
    to_ns: int | None = None


@dataclass
class Counts:
    """What was written, for the command's summary line and the test's comparison with the store."""

    processes: int = 0
    threads: int = 0
    slices: dict[str, int] = field(default_factory=dict)
    flows: int = 0


class TraceWriter:
    """Packets into a file: track descriptors first (once per track), then events in time order."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.tracks: set[int] = set()
        self.processes: set[int] = set()
        self.threads: set[int] = set()
        self.first = True

    def packet(self, body: bytes) -> None:
        seq = uint(P_SEQ_ID, SEQ)
        if self.first:
            seq += uint(P_SEQ_FLAGS, SEQ_INCREMENTAL_STATE_CLEARED)
            self.first = False
        self.out.write(data(1, body + seq))      # Trace.packet = 1

    def process_track(self, pid: int, name: str) -> int:
        u = _uuid("p", pid)
        if u not in self.tracks:
            self.tracks.add(u)
            self.processes.add(pid)
            pd = uint(PD_PID, pid) + string(PD_NAME, name)
            self.packet(data(P_TRACK_DESCRIPTOR, uint(TD_UUID, u) + data(TD_PROCESS, pd)))
        return u

    def thread_track(self, pid: int, tid: int, name: str, process_name: str) -> int:
        parent = self.process_track(pid, process_name or name)
        u = _uuid("t", pid, tid)
        if u not in self.tracks:
            self.tracks.add(u)
            self.threads.add(tid)
            td = uint(THD_PID, pid) + uint(THD_TID, tid) + string(THD_NAME, name)
            self.packet(data(P_TRACK_DESCRIPTOR, uint(TD_UUID, u) + uint(TD_PARENT, parent) + data(TD_THREAD, td)))
        return u

    def child_track(self, pid: int, tid: int, what: str, process_name: str) -> int:
        parent = self.process_track(pid, process_name)
        u = _uuid("c", pid, tid, what)
        if u not in self.tracks:
            self.tracks.add(u)
            self.packet(data(P_TRACK_DESCRIPTOR, uint(TD_UUID, u) + uint(TD_PARENT, parent)
                             + string(TD_NAME, f"{what} {tid}")))
        return u

    def event(self, ts: int, track: int, kind: int, name: str = "", category: str = "",
              annotations: bytes = b"", flow: int | None = None, flow_end: int | None = None) -> None:
        te = uint(TE_TYPE, kind) + uint(TE_TRACK, track)
        if category:
            te += string(TE_CATEGORIES, category)
        if name:
            te += string(TE_NAME, name)
        te += annotations
        if flow is not None:
            te += fixed64(TE_FLOW, flow)
        if flow_end is not None:
            te += fixed64(TE_FLOW_END, flow_end)
        self.packet(uint(P_TIMESTAMP, ts) + data(P_TRACK_EVENT, te))


Ev = tuple[int, int, int, str, str, bytes, int | None, int | None]   # ts, order, track, name, cat, ann, flow, end


def _slice(track: int, ts: int, end: int, name: str, cat: str, ann: bytes) -> Iterator[Ev]:
    yield (ts, 1, track, name, cat, ann, None, None)
    yield (max(end, ts), 0, track, "", "", b"", None, None)       # ends sort before begins at one instant


def _window_for_trace(store: Store, sel: Selection) -> list[SpanRef]:
    spans = trace_spans(store, sel.trace_id or "")
    sel.from_ns = min(s.start_ns for s in spans) if sel.from_ns is None else sel.from_ns
    sel.to_ns = max(s.end_ns for s in spans) if sel.to_ns is None else sel.to_ns
    pids = {s.pid for s in spans if s.pid > 0} | set(sel.pids)
    try:   # and the processes its causal chain crosses (the uninstrumented service, the culprit)
        a = why_span(store, pick_span(spans)).analysis
        pids |= {c.culprit.pid for c in a.chain if c.culprit.pid}
    except (SpanLookupError, NoDataError):
        pass
    sel.pids = sorted(pids)
    return spans


def _spans(store: Store, sel: Selection) -> list[SpanRef]:
    where = []
    if sel.pids:
        where.append(f"pid IN ({', '.join(str(int(p)) for p in sel.pids)})")
    if sel.from_ns is not None:
        where.append(f"end_ns >= {int(sel.from_ns)}")
    if sel.to_ns is not None:
        where.append(f"ts_ns <= {int(sel.to_ns)}")
    cond = (" WHERE " + " AND ".join(where)) if where else ""
    return [SpanRef.from_row(r) for r in store.query_rows(
        f"SELECT {SPAN_COLS} FROM spans{cond} ORDER BY ts_ns LIMIT {MAX_ROWS}")]


def _rows(store: Store, sel: Selection, types: list[str]) -> list[dict[str, Any]]:
    """Kernel rows of the selection through `kprobe events`' query (one pass per pid, or all pids)."""
    rows: list[dict[str, Any]] = []
    for pid in (sel.pids or [None]):
        rows.extend(fetch(store, EventQuery(pid=pid, types=types, from_ns=sel.from_ns, to_ns=sel.to_ns,
                                            limit=MAX_ROWS)))
    return rows


def _names(store: Store, pids: set[int]) -> dict[int, str]:
    if not pids:
        return {}
    ids = ", ".join(str(int(p)) for p in sorted(pids))
    out = {int(r["tgid"]): str(r["comm"]) for r in store.query_rows(
        f"SELECT tgid, argMax(comm, ts) AS comm FROM processes WHERE tgid IN ({ids}) GROUP BY tgid")}
    for r in store.query_rows(f"SELECT tgid, argMax(comm, ts) AS comm FROM offcpu WHERE tgid IN ({ids}) "
                              "AND tid = tgid GROUP BY tgid"):
        out[int(r["tgid"])] = str(r["comm"])
    return out


def export(store: Store, sel: Selection, path: Path) -> Counts:
    """Write the selection's trace to ``path``; returns what it holds."""
    if sel.trace_id:
        _window_for_trace(store, sel)
    kernel = _rows(store, sel, ["offcpu", "syscall", "reclaim", "block_io"])
    spans = _spans(store, sel)
    pids = {int(r["tgid"]) for r in kernel} | {s.pid for s in spans if s.pid > 0} | {
        int(r["waker_tgid"]) for r in kernel if r["type"] == "offcpu" and int(r["waker_tgid"])}
    procs = _names(store, pids)
    counts = Counts()
    evs: list[Ev] = []
    with path.open("wb") as f:
        w = TraceWriter(f)

        def thread(pid: int, tid: int, comm: str) -> int:
            return w.thread_track(pid, tid, comm or procs.get(pid, ""), procs.get(pid, comm))

        for r in kernel:
            t, pid, tid = r["type"], int(r["tgid"]), int(r["tid"])
            ts, end = int(r["ts"]), int(r["end_ts"])
            if t == "offcpu":
                track = thread(pid, tid, str(r["comm"]))
                ann = (_annotation("reason", r["reason"]) + _annotation("cpu_off", int(r["cpu_off"]))
                       + _annotation("cpu_on", int(r["cpu_on"])) + _annotation("runq_ns", int(r["runq_ns"]))
                       + _annotation("blocked_ns", int(r["blocked_ns"])))
                if r.get("syscall"):
                    ann += _annotation("syscall", r["syscall"])
                if int(r["preemptor_tid"]):
                    ann += _annotation("preemptor", _task(r, "preemptor"))
                if int(r["waker_tid"]):
                    ann += _annotation("waker", _task(r, "waker"))
                if int(r.get("displaced_tid") or 0):
                    ann += _annotation("ran_instead", _task(r, "displaced"))
                evs.extend(_slice(track, ts, end, f"off-CPU: {r['reason']}", "offcpu", ann))
                wake, wtid = int(r["wake_ts"]), int(r["waker_tid"])
                if wake and wtid and wtid != tid:
                    fid = _uuid("flow", pid, tid, ts)
                    wtrack = thread(int(r["waker_tgid"]), wtid, str(r["waker_comm"]))
                    evs.append((wake, 2, wtrack, f"wakes {r['comm']} {tid}", "wakeup", b"", fid, None))
                    evs.append((wake, 2, track, f"woken by {r['waker_comm']} {wtid}", "wakeup", b"", None, fid))
                    counts.flows += 1
            elif t == "syscall":
                track = w.child_track(pid, tid, "syscalls", procs.get(pid, ""))
                ann = _annotation("ret", int(r["ret"])) + _annotation("fd", int(r["fd"]))
                evs.extend(_slice(track, ts, end, str(r["syscall"]), "syscall", ann))
            else:
                track = w.child_track(pid, tid, "memory / block I/O", procs.get(pid, ""))
                name = f"{r['kind']} reclaim" if t == "reclaim" else _block_name(r)
                evs.extend(_slice(track, ts, end, name, t, b""))
            counts.slices[t] = counts.slices.get(t, 0) + 1
        for s in spans:
            track = w.child_track(s.pid, s.tid, f"spans {s.service}", procs.get(s.pid, s.service))
            ann = (_annotation("span_id", s.span_id) + _annotation("trace_id", s.trace_id)
                   + _annotation("status", "ERROR" if s.error else "OK" if s.status_code == 1 else "UNSET"))
            if s.status_message:
                ann += _annotation("status_message", s.status_message)
            evs.extend(_slice(track, s.start_ns, s.end_ns, s.name, "span", ann))
            counts.slices["span"] = counts.slices.get("span", 0) + 1
        evs.sort(key=lambda e: (e[0], e[1]))
        for ts, order, track, name, cat, ann, flow, flow_end in evs:
            kind = SLICE_END if order == 0 else SLICE_BEGIN if order == 1 else INSTANT
            w.event(ts, track, kind, name, cat, ann, flow, flow_end)
        counts.processes, counts.threads = len(w.processes), len(w.threads)
    return counts


def _block_name(r: dict) -> str:
    """One request, or (requests > 1) a submitter's fast requests summed over ~1 s by the kernel."""
    n = int(r.get("requests") or 1)
    return f"block {r['rwbs']} {r['bytes']} B" + (f" in {n} requests (summed)" if n > 1 else "")
