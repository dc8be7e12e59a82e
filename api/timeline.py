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

import time
from dataclasses import dataclass
from typing import Any

from kprobe.causal.fetch import Store
from kprobe.causal.spans import SpanRef
from kprobe.query.events import summary

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

    def overlap(self, f: int, t: int) -> str:
        if self.end is None:
            return f"{self.start} >= {f} AND {self.start} < {t}"
        return f"{self.start} < {t} AND {self.end} > {f}"


_OFFCPU_CLASS = ("multiIf(reason = 'preempted', 'preempted', reason = 'uninterruptible', 'io', "
                 "syscall IN ('futex', 'futex_waitv'), 'lock', "
                 f"skaddr != 0 OR syscall IN ({', '.join(repr(c) for c in NET_CALLS)}), 'net', "
                 "reason = 'sleep', 'sleep', 'other')")

KINDS: tuple[Kind, ...] = (
    Kind("span", "spans", "span", "pid", "tid", "ts_ns", "end_ns", "if(status_code = 2, 'error', 'span')"),
    Kind("offcpu", "offcpu", "offcpu", "tgid", "tid", "ts", "end_ts", _OFFCPU_CLASS),
    Kind("syscall", "syscall", "syscall", "tgid", "tid", "ts", "end_ts", "'syscall'"),
    Kind("reclaim", "reclaim", "memory", "tgid", "tid", "ts", "end_ts", "'reclaim'"),
    Kind("fault", "fault", "memory", "tgid", "tid", "ts", None, "'fault'"),
    Kind("block_io", "block_io", "io", "tgid", "tid", "ts", "end_ts", "'block_io'"),
    Kind("sock_io", "sock_io", "net", "tgid", "tid", "ts", None, "toString(dir)"),
    Kind("tcp_state", "tcp_state", "net", "tgid", "tid", "ts", None, "'tcp_state'"),
)
KIND_NAMES = tuple(k.name for k in KINDS)
ROWS = tuple(dict.fromkeys(k.row for k in KINDS))


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


def find_lanes(store: Store, w: Window, kinds: list[Kind]) -> list[tuple[int, int]]:
    """The threads with events in the window: all of the given pids' (up to MAX_LANES), else the busiest."""
    f, t = w.from_ns, w.to_ns
    parts = [f"SELECT toUInt32({k.pid}) AS p, toUInt32({k.tid}) AS th, count() AS n FROM {k.table} "
             f"WHERE {k.overlap(f, t)}{_pid_filter(k, w.pids)} GROUP BY p, th" for k in kinds]
    order = "p, th" if w.pids else "n DESC, p, th"
    rows = store.query_rows(f"SELECT p, th, sum(n) AS n FROM ({' UNION ALL '.join(parts)}) "
                            f"WHERE p != 0 GROUP BY p, th ORDER BY {order} LIMIT {MAX_LANES}")
    return sorted((int(r["p"]), int(r["th"])) for r in rows)


def lane_names(store: Store, lanes: list[tuple[int, int]]) -> dict[tuple[int, int], dict[str, str]]:
    """Thread name (its latest as the scheduler saw it), process name and service of each lane."""
    out: dict[tuple[int, int], dict[str, str]] = {ln: {"comm": "", "process": "", "service": ""} for ln in lanes}
    if not lanes:
        return out
    pids = ", ".join(str(p) for p in sorted({p for p, _ in lanes}))
    procs = {int(r["tgid"]): r for r in store.query_rows(
        f"SELECT tgid, argMax(comm, ts) AS comm, argMax(service, ts) AS service FROM processes "
        f"WHERE tgid IN ({pids}) GROUP BY tgid")}
    threads = {(int(r["tgid"]), int(r["tid"])): str(r["comm"]) for r in store.query_rows(
        f"SELECT tgid, tid, argMax(comm, ts) AS comm FROM offcpu WHERE tgid IN ({pids}) GROUP BY tgid, tid")}
    for p, t in lanes:
        main = threads.get((p, p)) or str(procs.get(p, {}).get("comm", ""))
        out[(p, t)] = {"comm": threads.get((p, t), main if t in (p, 0) else ""), "process": main,
                       "service": str(procs.get(p, {}).get("service", ""))}
    return out


def _item(k: Kind, r: dict[str, Any], f: int) -> dict[str, Any]:
    start = int(r[k.start])
    end = int(r[k.end]) if k.end else start
    item: dict[str, Any] = {"kind": k.name, "row": k.row, "cls": str(r["_cls"]), "t0": start - f, "t1": end - f,
                            "_lane": (int(r[k.pid]), int(r[k.tid]))}
    if k.name == "span":
        s = SpanRef.from_row(r)
        item["text"] = s.head()
        item["args"] = {"span_id": s.span_id, "trace_id": s.trace_id, "name": s.name, "service": s.service,
                        "status_message": s.status_message}
        return item
    row = dict(r, type=k.table)
    item["text"] = summary(row)
    if k.name == "offcpu":
        wake = int(r["wake_ts"])
        if wake and start < wake < end:
            item["tw"] = wake - f        # blocked until here, then waiting in the run queue
        item["args"] = {key: r[key] for key in (
            "reason", "syscall", "cpu_off", "cpu_on", "runq_ns", "preemptor_tgid", "preemptor_tid",
            "preemptor_comm", "preemptor_process", "waker_tgid", "waker_tid", "waker_comm", "waker_process",
            "displaced_tgid", "displaced_tid", "displaced_comm", "displaced_process")}
    return item


def _items(store: Store, k: Kind, w: Window, lanes: list[tuple[int, int]]) -> tuple[list[dict], bool]:
    f, t, b = w.from_ns, w.to_ns, w.bucket_ns
    assert k.end is not None
    rows = store.query_rows(
        f"SELECT *, {k.cls} AS _cls FROM {k.table} WHERE {k.overlap(f, t)} AND {_lane_filter(k, lanes)} "
        f"AND {k.end} - {k.start} >= {b} ORDER BY {k.end} - {k.start} DESC LIMIT {MAX_ITEMS + 1}")
    return [_item(k, r, f) for r in rows[:MAX_ITEMS]], len(rows) > MAX_ITEMS


def _bucket_sql(k: Kind, w: Window, lanes: list[tuple[int, int]]) -> str:
    """Short intervals and instants of one kind summed per (thread, class, bucket)."""
    f, t, b = w.from_ns, w.to_ns, w.bucket_ns
    if k.end is None:
        busy, short = "toUInt64(0)", ""
    else:
        busy, short = f"least({k.end}, {t}) - greatest({k.start}, {f})", f" AND {k.end} - {k.start} < {b}"
    return (f"SELECT toUInt32({k.pid}) AS p, toUInt32({k.tid}) AS th, '{k.row}' AS row, toString({k.cls}) AS cls, "
            f"intDiv(greatest({k.start}, {f}) - {f}, {b}) AS b, count() AS n, sum({busy}) AS busy "
            f"FROM {k.table} WHERE {k.overlap(f, t)} AND {_lane_filter(k, lanes)}{short} "
            "GROUP BY p, th, row, cls, b")


def timeline(store: Store, w: Window) -> dict[str, Any]:
    """Lanes, drawable items and summed buckets of the window, times relative to ``from_ns``."""
    t0 = time.perf_counter()
    kinds = [k for k in KINDS if k.name in w.kinds]
    lanes = find_lanes(store, w, kinds) if kinds else []
    index = {ln: i for i, ln in enumerate(lanes)}
    names = lane_names(store, lanes)
    items: list[dict[str, Any]] = []
    buckets: dict[str, list[Any]] = {"lane": [], "row": [], "cls": [], "b": [], "n": [], "busy_ns": []}
    truncated = False
    if lanes:
        for k in kinds:
            if k.end is None:
                continue
            got, cut = _items(store, k, w, lanes)
            truncated |= cut
            for it in got:
                it["lane"] = index[it.pop("_lane")]
            items.extend(got)
        rows = []
        for k in kinds:     # one statement per kind: a UNION ALL of them cost more than their sum
            rows.extend(store.query_rows(_bucket_sql(k, w, lanes) + f" LIMIT {MAX_BUCKET_ROWS + 1}"))
        truncated |= len(rows) > MAX_BUCKET_ROWS
        for r in rows[:MAX_BUCKET_ROWS]:
            lane = index.get((int(r["p"]), int(r["th"])))
            if lane is None:
                continue
            for key, val in (("lane", lane), ("row", r["row"]), ("cls", r["cls"]), ("b", int(r["b"])),
                             ("n", int(r["n"])), ("busy_ns", int(r["busy"]))):
                buckets[key].append(val)
    return {
        "from": str(w.from_ns), "to": str(w.to_ns), "from_ns": w.from_ns, "to_ns": w.to_ns,
        "width": w.width, "bucket_ns": w.bucket_ns, "rows": list(ROWS),
        "lanes": [{"tgid": p, "tid": t, **names[(p, t)]} for p, t in lanes],
        "items": items, "buckets": buckets, "truncated": truncated,
        "took_ms": round((time.perf_counter() - t0) * 1e3, 2),
    }
