"""The timeline at any zoom: one lane per thread, each event either drawn or summed into a bucket.

Why server-side level of detail: a minute of a busy host holds millions of rows, a browser can draw a
few thousand. The window is cut into buckets of the 1-2-5 ladder at least a pixel wide
(``timeline_levels.ladder_bucket``), aligned to absolute time so a pan reuses the same cells. An
interval at least a bucket long is visible as a slice, so it is sent as an item (the longest first,
at most ``MAX_ITEMS`` per kind); every shorter row and every instant is summed into the bucket its
start falls in, per (lane, kind): count, summed duration and the colour class of the longest (ties:
the greatest class), so the client draws density, never the rows. Bucket ``b`` of an answer starts
at ``bucket0_ns + b * bucket_ns`` (relative to ``from``; ``bucket0_ns`` <= 0).

Where the sums come from: buckets of a millisecond or more are read from the level-of-detail cells
(``timeline_levels``: built once per closed partition, exactly the raw rows' sums), narrower ones and
partitions still being written from the raw rows with the same definition. Lanes are the threads
with rows overlapping the window (all of the given pids', else the ``MAX_LANES`` busiest by that
count), counted from the cells inside the window plus the raw rows at its edges.

Texts of items come from the same columns ``kprobe events`` prints; details come from /events on click.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kprobe.api.timeline_levels import LOD_TABLE, Levels, ladder_bucket, ladder_index, level_for, tile
from kprobe.causal.records import Store
from kprobe.query.timefmt import format_dur

MAX_LANES = 48
MAX_ITEMS = 2000           # drawn intervals per kind and response (longest first)
MAX_BUCKET_ROWS = 200_000  # summed buckets per response (48 lanes x 1200 px x 3 kinds fit)
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
    comm: str = "''"   # SQL expression: the thread's name, in the tables that have it

    @property
    def dur(self) -> str:
        return "toUInt64(0)" if self.end is None else f"({self.end} - {self.start})"

    def overlap(self, f: int, t: int) -> str:
        """Rows in [f, t): an interval that ends after ``f`` or a zero-length one that starts inside."""
        if self.end is None:
            return f"{self.start} >= {f} AND {self.start} < {t}"
        return f"{self.start} < {t} AND {self.end} >= {f} AND ({self.end} > {f} OR {self.start} >= {f})"


_OFFCPU_CLASS = ("multiIf(reason = 'preempted', 'preempted', reason = 'uninterruptible', 'io', "
                 "syscall IN ('futex', 'futex_waitv'), 'lock', "
                 f"skaddr != 0 OR syscall IN ({', '.join(repr(c) for c in NET_CALLS)}), 'net', "
                 "reason = 'sleep', 'sleep', 'other')")

KINDS: tuple[Kind, ...] = (
    Kind("span", "spans", "span", "pid", "tid", "ts_ns", "end_ns", "if(status_code = 2, 'error', 'span')",
         "concat(service, ' span ', name, if(status_code = 2, ' ERROR', ''))"),
    Kind("offcpu", "offcpu", "offcpu", "tgid", "tid", "ts", "end_ts", _OFFCPU_CLASS,
         "concat('off-CPU ', toString(reason), if(syscall != '', concat(' in ', toString(syscall)), ''), "
         "if(reason = 'preempted', concat(' by ', toString(preemptor_comm)), ''))", "toString(comm)"),
    Kind("syscall", "syscall", "syscall", "tgid", "tid", "ts", "end_ts", "'syscall'",
         "concat(toString(syscall), ' ret=', toString(ret))"),
    Kind("reclaim", "reclaim", "memory", "tgid", "tid", "ts", "end_ts", "'reclaim'",
         "concat(toString(kind), ' reclaim')", "toString(comm)"),
    Kind("fault", "fault", "memory", "tgid", "tid", "ts", None, "'fault'"),
    Kind("block_io", "block_io", "io", "tgid", "tid", "ts", "end_ts", "'block_io'",
         "concat('block ', toString(rwbs), ' ', toString(bytes), ' B', "
         "if(requests > 1, concat(' in ', toString(requests), ' requests (summed)'), ''))", "toString(comm)"),
    Kind("sock_io", "sock_io", "net", "tgid", "tid", "ts", None, "toString(dir)"),
    Kind("tcp_state", "tcp_state", "net", "tgid", "tid", "ts", None, "'tcp_state'", "''", "toString(comm)"),
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
    levels: bool = True      # False: every sum from the raw rows (the ground truth the levels are tested against)

    @property
    def bucket_ns(self) -> int:
        return ladder_bucket(self.to_ns - self.from_ns, self.width)

    @property
    def first_cell(self) -> int:
        return self.from_ns // self.bucket_ns

    @property
    def end_cell(self) -> int:
        return -(-self.to_ns // self.bucket_ns)


def _lane_filter(k: Kind, lanes: list[tuple[int, int]], pid: str | None = None, tid: str | None = None) -> str:
    pairs = ", ".join(f"({int(p)}, {int(t)})" for p, t in lanes)
    return f"({pid or k.pid}, {tid or k.tid}) IN ({pairs})"


def _pid_filter(col: str, pids: tuple[int, ...]) -> str:
    return f" AND {col} IN ({', '.join(str(int(p)) for p in pids)})" if pids else ""


def _arrow(raw: bytes) -> pa.Table:
    """An ArrowStream answer: columns straight into numpy, no text to format and parse (a wide view sends
    ~100k sums; as JSON they cost more than the query)."""
    return pa.ipc.open_stream(raw).read_all() if raw else pa.table({})


def _strings(col: pa.ChunkedArray, mapping: dict[str, str] | None = None) -> list[str]:
    """A column of a few distinct strings as a list, each distinct value converted once."""
    enc = pc.dictionary_encode(col).combine_chunks()
    names = [mapping[v] if mapping else v for v in enc.dictionary.to_pylist()]
    return np.asarray(names, dtype=object)[enc.indices.to_numpy(zero_copy_only=False)].tolist() if names else []


def _append_buckets(out: dict[str, list[Any]], got: pa.Table, lanes: list[tuple[int, int]],
                    rows: dict[str, str]) -> None:
    """Sums (k, p, th, c, b, n, busy) appended to the answer's columns, lanes as their index."""
    if not got.num_rows:
        return
    keys = np.array([(p << 32) | t for p, t in lanes], dtype=np.uint64)
    p = got.column("p").to_numpy().astype(np.uint64)
    th = got.column("th").to_numpy().astype(np.uint64)
    out["lane"].extend(np.searchsorted(keys, (p << np.uint64(32)) | th).tolist())
    out["row"].extend(_strings(got.column("k"), rows))
    out["cls"].extend(_strings(got.column("c")))
    for name, col in (("b", "b"), ("n", "n"), ("busy_ns", "busy")):
        out[name].extend(got.column(col).to_numpy().tolist())


def _columns(raw: bytes, n: int) -> list[list[Any]]:
    """A JSONCompactColumns answer (one array per column: parsed in one call, no per-row dicts)."""
    text = raw.strip()
    cols = json.loads(text) if text else []
    return cols if cols else [[] for _ in range(n)]


def _latest_name(k: Kind) -> str:
    """SQL: (start, name) of the thread's latest row, as the level cells keep it; a constant for the tables
    without names (no per-row work)."""
    if k.comm == "''":
        return "(toUInt64(0), '')"
    return f"(max({k.start}), argMax({k.comm}, ({k.start}, {k.comm})))"


def _outside(k: Kind, tiles: list[tuple[int, int, int]]) -> str:
    """SQL: the row starts outside every tile (those rows are counted from the levels)."""
    return "".join(f" AND ({k.start} < {a} OR {k.start} >= {b})" for _, a, b in tiles)


def find_lanes(store: Store, w: Window, kinds: list[Kind], levels: bool = False
               ) -> tuple[list[tuple[int, int]], set[str], dict[tuple[int, int], str], set[str]]:
    """The threads with events in the window (all of the given pids', up to MAX_LANES, else the busiest),
    the kinds that have events on them (the others are not queried again), the threads' names, and the
    kinds with an interval at least a bucket long among them (the others have no items to draw).

    With ``levels``, rows starting in whole cells of the stored levels inside the window are counted from
    those cells (``timeline_levels.tile``) and only the edges and the rows that began before the window
    from the raw rows: the same counts, from a few thousand cells."""
    f, t, b = w.from_ns, w.to_ns, w.bucket_ns
    tiles = tile(f, t) if levels else []
    parts = [f"SELECT '{k.name}' AS k, toUInt32({k.pid}) AS p, toUInt32({k.tid}) AS th, count() AS n, "
             f"countIf({k.dur} >= {b}) AS lg, {_latest_name(k)} AS nm FROM {k.table} "
             f"WHERE {k.overlap(f, t)}{_pid_filter(k.pid, w.pids)}{_outside(k, tiles)} GROUP BY p, th" for k in kinds]
    if tiles:
        names = ", ".join(f"'{k.name}'" for k in kinds)
        cells = " OR ".join(f"(level = {lv} AND t0 >= {a} AND t0 < {z})" for lv, a, z in tiles)
        parts.append(f"SELECT toString(kind) AS k, tgid AS p, tid AS th, sum(n) AS cnt, "
                     f"sumIf(n, dclass > {ladder_index(b)}) AS lg, max(named) AS nm FROM {LOD_TABLE} "
                     f"WHERE ({cells}) AND kind IN ({names}){_pid_filter('tgid', w.pids)} GROUP BY k, p, th")
    cols = _columns(store.query(f"SELECT k, p, th, n, lg, nm.1, nm.2 FROM ({' UNION ALL '.join(parts)}) "
                                "WHERE p != 0", "JSONCompactColumns"), 7)
    per_lane: dict[tuple[int, int], int] = {}
    for p, th, n in zip(cols[1], cols[2], cols[3], strict=True):
        per_lane[(p, th)] = per_lane.get((p, th), 0) + int(n)
    key = (lambda ln: ln) if w.pids else (lambda ln: (-per_lane[ln], ln))
    lanes = sorted(sorted(per_lane, key=key)[:MAX_LANES])
    chosen = set(lanes)
    present, long = set(), set()
    for k, p, th, lg in zip(cols[0], cols[1], cols[2], cols[4], strict=True):
        if (p, th) in chosen:
            present.add(k)
            if int(lg):
                long.add(k)
    named: dict[tuple[int, int], tuple[int, str]] = {}   # the name in the thread's latest row that has one
    for p, th, at, c in zip(cols[1], cols[2], cols[5], cols[6], strict=True):
        if c and (p, th) in chosen:
            named[(p, th)] = max(named.get((p, th), (0, "")), (int(at), c))
    return lanes, present, {ln: c for ln, (_, c) in named.items()}, long


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
        f"AND {k.dur} >= {b} ORDER BY {k.dur} DESC, {k.start}, {k.tid} LIMIT {MAX_ITEMS + 1}",
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


def raw_bucket_sql(k: Kind, w: Window, lanes: list[tuple[int, int]]) -> str:
    """Rows of one kind shorter than a bucket summed per (thread, bucket of their start), from the raw rows."""
    b, c0, c1 = w.bucket_ns, w.first_cell, w.end_cell
    return (f"SELECT '{k.name}' AS k, toUInt32({k.pid}) AS p, toUInt32({k.tid}) AS th, "
            f"max(({k.dur}, toString({k.cls}))).2 AS c, "
            f"toInt64(intDiv({k.start}, {b})) - {c0} AS b, count() AS n, sum({k.dur}) AS busy "
            f"FROM {k.table} WHERE {k.start} >= {c0 * b} AND {k.start} < {c1 * b} AND {_lane_filter(k, lanes)} "
            f"AND {k.dur} < {b} GROUP BY p, th, b ORDER BY p, th, b LIMIT {MAX_BUCKET_ROWS + 1}")


def lod_cells_sql(kinds: list[Kind], w: Window, lanes: list[tuple[int, int]], level: int) -> str:
    """The level's cells of the window's buckets holding rows shorter than a bucket, not yet summed per
    bucket: ``lod_sums`` does that in numpy (a GROUP BY with the class of the longest cost chDB several
    times the read of these few cells)."""
    b, c0, c1 = w.bucket_ns, w.first_cell, w.end_cell
    names = ", ".join(f"'{k.name}'" for k in kinds)
    return (f"SELECT toString(kind) AS k, tgid AS p, tid AS th, toInt64(intDiv(t0, {b})) - {c0} AS b, n, busy, "
            f"top.1 AS lg, top.2 AS c FROM {LOD_TABLE} "
            f"WHERE level = {level} AND t0 >= {c0 * b} AND t0 < {c1 * b} AND kind IN ({names}) "
            f"AND dclass <= {ladder_index(b)} AND {_lane_filter(kinds[0], lanes, 'tgid', 'tid')} "
            "ORDER BY p, th, b, k")   # the table's order (level, tgid, tid, t0, kind): sorted as read


def _codes(col: pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    """A string column as codes whose order is the strings' order, and the strings."""
    enc = pc.dictionary_encode(col).combine_chunks()
    names = enc.dictionary.to_pylist()
    rank = np.empty(len(names), dtype=np.int64)
    rank[np.argsort(np.array(names, dtype=object))] = np.arange(len(names))
    return rank[enc.indices.to_numpy(zero_copy_only=False)], sorted(names)


def lod_sums(cells: pa.Table) -> pa.Table:
    """Cells (ordered by thread, bucket, kind) summed per (kind, thread, bucket): count and busy summed,
    the class of the longest row (ties: the greatest class), exactly what ``raw_bucket_sql`` computes
    from the rows. Consecutive runs, so no sort: reductions over run starts."""
    if not cells.num_rows:
        return pa.table({"k": pa.array([], pa.string()), "p": pa.array([], pa.uint32()),
                         "th": pa.array([], pa.uint32()), "c": pa.array([], pa.string()),
                         "b": pa.array([], pa.int64()), "n": pa.array([], pa.uint64()),
                         "busy": pa.array([], pa.uint64())})
    k, knames = _codes(cells.column("k"))
    c, cnames = _codes(cells.column("c"))
    p, th = cells.column("p").to_numpy(), cells.column("th").to_numpy()
    b, lg = cells.column("b").to_numpy(), cells.column("lg").to_numpy()
    new = np.ones(len(k), dtype=bool)
    new[1:] = (k[1:] != k[:-1]) | (p[1:] != p[:-1]) | (th[1:] != th[:-1]) | (b[1:] != b[:-1])
    starts = np.flatnonzero(new)
    run = np.cumsum(new) - 1                        # each cell's run
    longest = np.maximum.reduceat(lg, starts)
    cls = np.maximum.reduceat(np.where(lg == longest[run], c, -1), starts)
    return pa.table({
        "k": pa.array(np.array(knames, dtype=object)[k[starts]].tolist(), pa.string()),
        "p": pa.array(p[starts]), "th": pa.array(th[starts]),
        "c": pa.array(np.array(cnames, dtype=object)[cls].tolist(), pa.string()),
        "b": pa.array(b[starts]),
        "n": pa.array(np.add.reduceat(cells.column("n").to_numpy(), starts)),
        "busy": pa.array(np.add.reduceat(cells.column("busy").to_numpy(), starts)),
    })


def timeline(store: Store, w: Window, levels: Levels | None = None) -> dict[str, Any]:
    """Lanes, drawable items and summed buckets of the window, times relative to ``from_ns``."""
    t0 = time.perf_counter()
    kinds = [k for k in KINDS if k.name in w.kinds]
    level = level_for(w.bucket_ns) if w.levels and levels is not None else None
    if level is not None and not (levels is not None and levels.prepare(kinds, w.from_ns, w.to_ns)):
        level = None      # cells missing (being built), or not buildable: the raw rows answer
    lanes, present, comms, long = find_lanes(store, w, kinds, level is not None) if kinds else ([], set(), {}, set())
    kinds = [k for k in kinds if k.name in present]
    index = {ln: i for i, ln in enumerate(lanes)}
    names = lane_names(store, lanes, comms)
    rows = {k.name: k.row for k in KINDS}
    items: list[dict[str, Any]] = []
    buckets: dict[str, list[Any]] = {"lane": [], "row": [], "cls": [], "b": [], "n": [], "busy_ns": []}
    truncated = False
    if lanes and kinds:
        for k in kinds:
            if k.end is not None and k.name in long:
                got, cut = _items(store, k, w, lanes, index)
                truncated |= cut
                items.extend(got)
        sqls = [lod_cells_sql(kinds, w, lanes, level)] if level is not None else \
            [raw_bucket_sql(k, w, lanes) for k in kinds]   # one statement per kind: a UNION ALL cost more
        for sql in sqls:
            room = MAX_BUCKET_ROWS - len(buckets["b"])
            if room <= 0:
                truncated = True
                break
            got = _arrow(store.query(sql, "ArrowStream"))
            got = lod_sums(got) if level is not None else got
            truncated |= got.num_rows > room
            _append_buckets(buckets, got.slice(0, room), lanes, rows)
    return {
        "from": str(w.from_ns), "to": str(w.to_ns), "from_ns": w.from_ns, "to_ns": w.to_ns,
        "width": w.width, "bucket_ns": w.bucket_ns, "bucket0_ns": w.first_cell * w.bucket_ns - w.from_ns,
        "rows": list(ROWS),
        "lanes": [{"tgid": p, "tid": t, **names[(p, t)]} for p, t in lanes],
        "items": items, "buckets": buckets, "truncated": truncated,
        "lod": {"level_ns": level},
        "took_ms": round((time.perf_counter() - t0) * 1e3, 2),
    }
