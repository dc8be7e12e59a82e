"""The timeline at any zoom: one lane per thread, each event either drawn or summed into a pixel bucket.

Why server-side level of detail: a minute of a busy host holds millions of rows, a browser can draw a
few thousand. The window is cut into ``width`` buckets (one per pixel). An interval at least one
bucket long is visible as a slice, so it is sent as an item (the longest first, at most
``MAX_ITEMS`` per kind); everything shorter is summed per (lane, row, class, bucket) in the store
(count and busy ns), so the client draws density, never the rows. Zoomed to microseconds the
buckets are nanoseconds wide and every interval becomes an item. The cost therefore depends on the
rows in the window (scanned once per kind in the store, with the tables' time skip indexes) and
not on how many the browser would have had to draw.

Texts of items come from ``kprobe.query.events.summary``, the same words `kprobe events` prints.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from kprobe.causal.records import Store
from kprobe.query.timefmt import format_dur

MAX_LANES = 48
MAX_ITEMS = 2000          # drawn intervals per kind and response (longest first)
MAX_BUCKET_ROWS = 60_000  # summed buckets per response
NET_CALLS = ("recvfrom", "recvmsg", "recvmmsg", "read", "readv", "sendto", "sendmsg", "poll", "ppoll",
             "epoll_wait", "epoll_pwait", "epoll_pwait2", "select", "pselect6", "accept", "accept4", "connect")


@dataclass(frozen=True)
class Kind:
    """One event source drawn on the timeline: where its rows are and how they are classed."""

    name: str          # what the client asks for (?types=)
    table: str
    row: str           # the sub-row of a lane it is drawn in
    pid: str           # process and thread columns
    tid: str
    start: str
    end: str | None    # None: an instant
    cls: str           # SQL expression: the colour class
    label: str = "''"  # SQL expression: the few words drawn on a slice (details come from /events on click)

    def overlap(self, f: int, t: int, longest: int = -1) -> str:
        """Rows in [f, t). ``longest`` (the table's longest interval) bounds the start from below too,
        so the time skip indexes can skip granules: without it every row that began before ``t``
        is read, whatever the zoom."""
        if self.end is None:
            return f"{self.start} >= {f} AND {self.start} < {t}"
        low = f" AND {self.start} >= {max(0, f - longest)}" if longest >= 0 else ""
        return f"{self.start} < {t} AND {self.end} > {f}{low}"


_OFFCPU_CLASS = ("multiIf(reason = 'preempted', 'preempted', reason = 'uninterruptible', 'io', "
                 "syscall IN ('futex', 'futex_waitv'), 'lock', "
                 f"skaddr != 0 OR syscall IN ({', '.join(repr(c) for c in NET_CALLS)}), 'net', "
                 "reason = 'sleep', 'sleep', 'other')")

KINDS: tuple[Kind, ...] = (
    Kind("span", "spans", "span", "pid", "tid", "ts_ns", "end_ns", "if(status_code = 2, 'error', 'span')",
         "concat(service, ' span ', name, if(status_code = 2, ' ERROR', ''))"),
    Kind("offcpu", "offcpu", "offcpu", "tgid", "tid", "ts", "end_ts", _OFFCPU_CLASS,
         "concat('off-CPU ', toString(reason), if(syscall != '', concat(' in ', toString(syscall)), ''), "
         "if(reason = 'preempted', concat(' by ', toString(preemptor_comm)), ''))"),
    Kind("syscall", "syscall", "syscall", "tgid", "tid", "ts", "end_ts", "'syscall'",
         "concat(toString(syscall), ' ret=', toString(ret))"),
    Kind("reclaim", "reclaim", "memory", "tgid", "tid", "ts", "end_ts", "'reclaim'",
         "concat(toString(kind), ' reclaim')"),
    Kind("fault", "fault", "memory", "tgid", "tid", "ts", None, "'fault'"),
    Kind("block_io", "block_io", "io", "tgid", "tid", "ts", "end_ts", "'block_io'",
         "concat('block ', toString(rwbs), ' ', toString(bytes), ' B', "
         "if(requests > 1, concat(' in ', toString(requests), ' requests (summed)'), ''))"),
    Kind("sock_io", "sock_io", "net", "tgid", "tid", "ts", None, "toString(dir)"),
    Kind("tcp_state", "tcp_state", "net", "tgid", "tid", "ts", None, "'tcp_state'"),
)
KIND_NAMES = tuple(k.name for k in KINDS)
ROWS = tuple(dict.fromkeys(k.row for k in KINDS))
WITH_COMM = ("offcpu", "reclaim", "block_io", "tcp_state")    # tables that name the thread


@dataclass(frozen=True)
class Window:
    from_ns: int
    to_ns: int
    width: int
    pids: tuple[int, ...] = ()
    kinds: tuple[str, ...] = KIND_NAMES

    @property
    def bucket_ns(self) -> int:
        return max(1, (self.to_ns - self.from_ns) // self.width)


def _lane_filter(k: Kind, lanes: list[tuple[int, int]]) -> str:
    pairs = ", ".join(f"({int(p)}, {int(t)})" for p, t in lanes)
    return f"({k.pid}, {k.tid}) IN ({pairs})"


def _pid_filter(k: Kind, pids: tuple[int, ...]) -> str:
    return f" AND {k.pid} IN ({', '.join(str(int(p)) for p in pids)})" if pids else ""


def find_lanes(store: Store, w: Window, kinds: list[Kind]) -> tuple[list[tuple[int, int]], set[str], dict[tuple[int, int], str]]:
    """The threads with events in the window (all of the given pids', up to MAX_LANES, else the busiest)
    and the kinds that have events on them (the others are not queried again)."""
    f, t = w.from_ns, w.to_ns
    parts = [f"SELECT '{k.name}' AS k, toUInt32({k.pid}) AS p, toUInt32({k.tid}) AS th, count() AS n, "
             f"{'toString(anyLast(comm))' if k.table in WITH_COMM else chr(39) * 2} AS c "
             f"FROM {k.table} WHERE {k.overlap(f, t)}{_pid_filter(k, w.pids)} GROUP BY p, th" for k in kinds]
    cols = _columns(store.query(f"SELECT k, p, th, n, c FROM ({' UNION ALL '.join(parts)}) WHERE p != 0",
                                "JSONCompactColumns"), 5)
    per_lane: dict[tuple[int, int], int] = {}
    for p, th, n in zip(cols[1], cols[2], cols[3], strict=True):
        per_lane[(p, th)] = per_lane.get((p, th), 0) + n
    key = (lambda ln: ln) if w.pids else (lambda ln: (-per_lane[ln], ln))
    lanes = sorted(sorted(per_lane, key=key)[:MAX_LANES])
    chosen = set(lanes)
    present = {k for k, p, th in zip(cols[0], cols[1], cols[2], strict=True) if (p, th) in chosen}
    comms = {(p, th): c for p, th, c in zip(cols[1], cols[2], cols[4], strict=True) if c and (p, th) in chosen}
    return lanes, present, comms


def _columns(raw: bytes, n: int) -> list[list[Any]]:
    """A JSONCompactColumns answer (one array per column: parsed in one call, no per-row dicts)."""
    text = raw.strip()
    cols = json.loads(text) if text else []
    return cols if cols else [[] for _ in range(n)]


def lane_names(store: Store, lanes: list[tuple[int, int]],
               threads: dict[tuple[int, int], str]) -> dict[tuple[int, int], dict[str, str]]:
    """Thread name (as the window's rows name it), process name and service of each lane."""
    out: dict[tuple[int, int], dict[str, str]] = {ln: {"comm": "", "process": "", "service": ""} for ln in lanes}
    if not lanes:
        return out
    pids = ", ".join(str(p) for p in sorted({p for p, _ in lanes}))
    procs = {int(r["tgid"]): r for r in store.query_rows(
        f"SELECT tgid, argMax(comm, ts) AS comm, argMax(service, ts) AS service FROM processes "
        f"WHERE tgid IN ({pids}) GROUP BY tgid")}
    for p, t in lanes:
        main = threads.get((p, p)) or str(procs.get(p, {}).get("comm", ""))
        out[(p, t)] = {"comm": threads.get((p, t), main if t in (p, 0) else ""), "process": main,
                       "service": str(procs.get(p, {}).get("service", ""))}
    return out


def _items(store: Store, k: Kind, w: Window, lanes: list[tuple[int, int]],
           index: dict[tuple[int, int], int]) -> tuple[list[dict[str, Any]], bool]:
    """The kind's intervals at least a bucket long, longest first: position, class and a short label only.

    Reading every column of a million-row window costs more than the rest of the answer; the client
    asks /events for the one slice it shows in detail (`kprobe events`' words and fields).
    """
    f, t, b = w.from_ns, w.to_ns, w.bucket_ns
    assert k.end is not None
    wake = "wake_ts" if k.name == "offcpu" else "toUInt64(0)"
    extra = "span_id, trace_id" if k.name == "span" else "'', ''"
    c = _columns(store.query(
        f"SELECT toUInt32({k.pid}), toUInt32({k.tid}), {k.start}, {k.end}, {wake}, toString({k.cls}), "
        f"{k.label}, {extra} FROM {k.table} WHERE {k.overlap(f, t)} AND {_lane_filter(k, lanes)} "
        f"AND {k.end} - {k.start} >= {b} ORDER BY {k.end} - {k.start} DESC LIMIT {MAX_ITEMS + 1}",
        "JSONCompactColumns"), 9)
    out = []
    for p, th, start, end, wk, cls, label, sid, tid in list(zip(*c, strict=True))[:MAX_ITEMS]:
        item: dict[str, Any] = {"lane": index[(p, th)], "kind": k.name, "row": k.row, "cls": cls,
                                "t0": int(start) - f, "t1": int(end) - f, "ts": str(start),
                                "text": f"{label} {format_dur(int(end) - int(start))}"}
        if wk and int(start) < int(wk) < int(end):
            item["tw"] = int(wk) - f        # blocked until here, then waiting in the run queue
        if sid:
            item["span_id"], item["trace_id"] = sid, tid
        out.append(item)
    return out, len(c[0]) > MAX_ITEMS


def _bucket_sql(k: Kind, w: Window, lanes: list[tuple[int, int]]) -> str:
    """Short intervals and instants of one kind summed per (thread, bucket), coloured by the class of
    the longest of them (one sum per pixel and row keeps the answer small at any zoom)."""
    f, t, b = w.from_ns, w.to_ns, w.bucket_ns
    if k.end is None:
        busy, short, d = "toUInt64(0)", "", "toUInt64(1)"
    else:
        busy, short = f"least({k.end}, {t}) - greatest({k.start}, {f})", f" AND {k.end} - {k.start} < {b}"
        d = f"{k.end} - {k.start}"
    constant = k.cls.startswith("'") and k.cls.endswith("'")
    cls = f"toString({k.cls})" if constant else f"argMax(toString({k.cls}), {d})"
    return (f"SELECT toUInt32({k.pid}) AS p, toUInt32({k.tid}) AS th, {cls} AS cls, "
            f"intDiv(greatest({k.start}, {f}) - {f}, {b}) AS b, count() AS n, sum({busy}) AS busy "
            f"FROM {k.table} WHERE {k.overlap(f, t)} AND {_lane_filter(k, lanes)}{short} "
            f"GROUP BY p, th, b LIMIT {MAX_BUCKET_ROWS + 1}")


def timeline(store: Store, w: Window) -> dict[str, Any]:
    """Lanes, drawable items and summed buckets of the window, times relative to ``from_ns``."""
    t0 = time.perf_counter()
    kinds = [k for k in KINDS if k.name in w.kinds]
    lanes, present, comms = find_lanes(store, w, kinds) if kinds else ([], set(), {})
    kinds = [k for k in kinds if k.name in present]
    index = {ln: i for i, ln in enumerate(lanes)}
    names = lane_names(store, lanes, comms)
    items: list[dict[str, Any]] = []
    buckets: dict[str, list[Any]] = {"lane": [], "row": [], "cls": [], "b": [], "n": [], "busy_ns": []}
    truncated = False
    if lanes:
        for k in kinds:
            if k.end is not None:
                got, cut = _items(store, k, w, lanes, index)
                truncated |= cut
                items.extend(got)
        for k in kinds:     # one statement per kind: a UNION ALL of them cost more than their sum
            if len(buckets["b"]) >= MAX_BUCKET_ROWS:
                truncated = True
                break
            p, th, cls, b, n, busy = _columns(store.query(_bucket_sql(k, w, lanes), "JSONCompactColumns"), 6)
            room = MAX_BUCKET_ROWS - len(buckets["b"])
            truncated |= len(b) > room
            buckets["lane"].extend(index[ln] for ln in list(zip(p, th, strict=True))[:room])
            buckets["row"].extend([k.row] * min(room, len(b)))
            buckets["cls"].extend(cls[:room])
            buckets["b"].extend(b[:room])
            buckets["n"].extend(n[:room])
            buckets["busy_ns"].extend(busy[:room])
    return {
        "from": str(w.from_ns), "to": str(w.to_ns), "from_ns": w.from_ns, "to_ns": w.to_ns,
        "width": w.width, "bucket_ns": w.bucket_ns, "rows": list(ROWS),
        "lanes": [{"tgid": p, "tid": t, **names[(p, t)]} for p, t in lanes],
        "items": items, "buckets": buckets, "truncated": truncated,
        "took_ms": round((time.perf_counter() - t0) * 1e3, 2),
    }
