"""The timeline's level of detail: per-cell sums of a closed partition, built the first time a view needs them.

Why: the widest views of a busy host cover a million rows; scanning them for every zoom and pan was
most of such a request's time (chDB reading and grouping raw rows: bench/api_timeline.py --profile
prints the split). The sums a wide view draws only depend on which cell of the 1-2-5 bucket ladder a row
starts in, its thread, kind, colour class and whether it is shorter than a bucket; so per stored
level (cells of 1 ms, 10 ms, 100 ms, 1 s) the table ``timeline_lod`` keeps, per thread, kind, cell and
duration class: how many rows start there, their summed duration, the longest with its colour class
and the thread's name in the latest of them. A bucket of the ladder at or above a millisecond is a whole number of one level's
cells, and a row is shorter than a ladder bucket exactly when its duration class (the position of the
first ladder value above its duration) is at most the bucket's position; so a wide view reads a few
thousand cells and gets exactly what a GROUP BY over the raw rows gives (tests/api/test_timeline_lod.py).

Why built on demand and not by a materialized view at insert time: a materialized view (or an
aggregate projection) on the event tables adds a second aggregation and part write to every insert
(the recorder's CPU per insert grew by about half when tried), and the recorder inserts the busy
tables several times a second, all day, while most rows are never looked at. So the first view of a (kind, 10-minute partition)
builds its cells once (a GROUP BY of that partition, then each coarser level from the finer one) and
every later view reads them. A partition is built only once it is closed (its end a minute in the
past): the one being written is read raw. Each build records the partition's generation (rows and
highest block number of its parts: merges keep both, inserts and deletes change them); a partition whose
raw rows changed since is rebuilt before use, one whose raw rows are gone (retention) loses its cells.
Only a store this process may write builds levels: through a running recorder's read-only socket
every view is read raw, as before.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from kprobe.causal.records import Store
from kprobe.schemas.store_tables import PARTITION_MINUTES

LOD_TABLE = "timeline_lod"
MARKS_TABLE = "timeline_lod_parts"
LEVELS: tuple[int, ...] = (1_000_000, 10_000_000, 100_000_000, 1_000_000_000)  # cell widths, ns
LADDER: tuple[int, ...] = tuple(m * 10**k for k in range(16) for m in (1, 2, 5))  # bucket widths, ns
NEVER_SHORT = 255            # duration class of a row longer than the whole ladder
PARTITION_NS = PARTITION_MINUTES * 60 * 1_000_000_000
CLOSED_AFTER_NS = 60 * 1_000_000_000   # a partition is built once its end is this far in the past
BUILD_DELAY_S = 0.5                    # a build starts this long after the view that found cells missing
CHUNK_ROWS = 100_000                   # rows read per build statement (a view waits for at most one)


def ladder_bucket(span_ns: int, width: int) -> int:
    """The narrowest ladder value at least a pixel wide (so a bucket covers one to 2.5 pixels)."""
    need = max(1, -(-span_ns // max(1, width)))
    return next((v for v in LADDER if v >= need), LADDER[-1])


def ladder_index(bucket_ns: int) -> int:
    """1-based position of a ladder value: rows shorter than it have a duration class <= this."""
    return LADDER.index(bucket_ns) + 1


def level_for(bucket_ns: int) -> int | None:
    """The coarsest stored level whose cells tile ``bucket_ns`` buckets, None below the finest level."""
    fit = [lv for lv in LEVELS if lv <= bucket_ns and bucket_ns % lv == 0]
    return fit[-1] if fit else None


def tile(from_ns: int, to_ns: int, levels: tuple[int, ...] = LEVELS) -> list[tuple[int, int, int]]:
    """[from, to) cut into whole cells of the stored levels, coarsest first: (level, start, end) ranges.
    What is left at the edges (less than a finest cell) is not covered: it is read from the raw rows."""
    if not levels:
        return []
    lv = levels[-1]
    a, b = -(-from_ns // lv) * lv, to_ns // lv * lv
    if a >= b:
        return tile(from_ns, to_ns, levels[:-1])
    return [(lv, a, b)] + tile(from_ns, a, levels[:-1]) + tile(b, to_ns, levels[:-1])


def duration_class(dur: str, level: int) -> str:
    """SQL: 0 for a row shorter than the finest level's cell (short at every bucket the levels serve), else
    the 1-based position of the first ladder value above its duration (NEVER_SHORT past the ladder). The
    same at every level, so any level's cells also say which kinds have rows longer than a bucket."""
    first = f"arrayFirstIndex(x -> {dur} < x, [{', '.join(str(v) for v in LADDER)}])"
    return f"toUInt8(if({dur} < {level}, 0, if({first} = 0, {NEVER_SHORT}, {first})))"


_CREATE = (
    f"CREATE TABLE IF NOT EXISTS {LOD_TABLE} (level UInt64, kind LowCardinality(String), tgid UInt32, tid UInt32, "
    "t0 UInt64, dclass UInt8, n SimpleAggregateFunction(sum, UInt64), busy SimpleAggregateFunction(sum, UInt64), "
    "top SimpleAggregateFunction(max, Tuple(UInt64, String)), "
    "named SimpleAggregateFunction(max, Tuple(UInt64, String))) "
    f"ENGINE = AggregatingMergeTree PARTITION BY (intDiv(t0, {PARTITION_NS}), kind) "
    "ORDER BY (level, tgid, tid, t0, kind, dclass)",
    f"CREATE TABLE IF NOT EXISTS {MARKS_TABLE} (kind LowCardinality(String), part Int64, rows UInt64, "
    "block Int64, built_ns UInt64) ENGINE = MergeTree ORDER BY (kind, part)",
)


@dataclass(frozen=True)
class Source:
    """What the level builder needs of a timeline kind (``timeline_lod.Kind`` satisfies it)."""

    name: str
    table: str
    pid: str
    tid: str
    start: str
    dur: str
    cls: str
    comm: str


def _build_sql(k: Source, part: int, pids: tuple[int, int]) -> list[str]:
    """The cells of one partition's processes ``pids`` (a range): the finest level from the rows, then
    each level from the one below (exact: a cell is one thread's, sums and maxima compose)."""
    lo, hi = part * PARTITION_NS, (part + 1) * PARTITION_NS
    first = LEVELS[0]
    out = [f"INSERT INTO {LOD_TABLE} SELECT {first}, '{k.name}', toUInt32({k.pid}) AS p, toUInt32({k.tid}) AS th, "
           f"intDiv({k.start}, {first}) * {first} AS c, {duration_class(k.dur, first)} AS d, "
           f"count(), sum({k.dur}), max(({k.dur}, toString({k.cls}))), max(({k.start}, {k.comm})) FROM {k.table} "
           f"WHERE {k.start} >= {lo} AND {k.start} < {hi} AND {k.pid} BETWEEN {pids[0]} AND {pids[1]} "
           "GROUP BY p, th, c, d"]
    for finer, lv in zip(LEVELS, LEVELS[1:], strict=False):
        out.append(f"INSERT INTO {LOD_TABLE} SELECT {lv}, kind, tgid, tid, intDiv(t0, {lv}) * {lv} AS c, "
                   f"dclass AS d, sum(n), sum(busy), max(top), max(named) FROM {LOD_TABLE} "
                   f"WHERE level = {finer} AND kind = '{k.name}' AND t0 >= {lo} AND t0 < {hi} "
                   f"AND tgid BETWEEN {pids[0]} AND {pids[1]} GROUP BY kind, tgid, tid, c, d")
    return out


def pid_chunks(counts: list[tuple[int, int]], rows: int) -> list[tuple[int, int]]:
    """(pid, rows) in pid order cut into pid ranges of about ``rows`` rows (one busier process alone)."""
    out: list[tuple[int, int]] = []
    start, prev, total = None, 0, 0
    for pid, n in counts:
        if start is not None and total + n > rows:
            out.append((start, prev))
            start, total = None, 0
        if start is None:
            start = pid
        total += n
        prev = pid
    if start is not None:
        out.append((start, prev))
    return out


@dataclass
class Levels:
    """Builds and checks the level-of-detail cells of one store; one per served store.

    Building a busy partition takes seconds (it reads every row once), so by default it runs on a
    thread of its own, a slice of processes per statement (``CHUNK_ROWS``), and the views that asked
    are answered from the raw rows meanwhile, each waiting at most for one slice's statement. ``background=False`` builds before answering
    (tests). A failed build is counted in ``errors`` and the views stay raw."""

    store: Store
    background: bool = True
    built_ms: float = 0.0          # time spent building (the bench prints it)
    builds: int = 0                # (kind, partition) builds done
    errors: int = 0                # builds that failed
    last_error: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)        # one build at a time
    _worker: threading.Thread | None = None
    _ready: bool | None = None

    def writable(self) -> bool:
        """Only a store this process owns (the embedded chDB store) can hold built levels."""
        if self._ready is None:
            from kprobe.sinks.chdb_store import ChdbStore

            self._ready = isinstance(self.store, ChdbStore)
            if self._ready:
                for sql in _CREATE:
                    self.store.query(sql)
        return self._ready

    def prepare(self, kinds: list[Any], from_ns: int, to_ns: int, now_ns: int | None = None) -> bool:
        """True when every (kind, partition) the window touches has current cells; otherwise False, after
        starting the build of what is missing or stale where it can be built (not a partition still being
        written, not a read-only store)."""
        if not kinds or not self.writable():
            return False
        now = time.time_ns() if now_ns is None else now_ns
        parts = range(from_ns // PARTITION_NS, (to_ns - 1) // PARTITION_NS + 1)
        if len(parts) > 1000:
            return False
        gen = self._generations({k.table for k in kinds}, parts)
        marks = self._marks([k.name for k in kinds], parts)
        stale = [(k, p, gen.get((k.table, p), (0, 0))) for k in kinds for p in parts
                 if marks.get((k.name, p)) != gen.get((k.table, p), (0, 0))]
        if not stale:
            return True
        if any((p + 1) * PARTITION_NS > now - CLOSED_AFTER_NS for _, p, _ in stale):
            return False
        if not self.background:
            failed = self.errors
            self._build_all(stale, now)
            return self.errors == failed
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._build_all, args=(stale, now, BUILD_DELAY_S), daemon=True,
                                            name="timeline-levels")
            self._worker.start()
        return False

    def wait(self, timeout: float | None = None) -> None:
        """Until the build running now (if any) is done."""
        if self._worker is not None:
            self._worker.join(timeout)

    def _build_all(self, stale: list[tuple[Any, int, tuple[int, int]]], now: int, delay_s: float = 0.0) -> None:
        time.sleep(delay_s)    # the view that started it answers first, not competing with the build
        with self._lock:
            t = time.perf_counter()
            for k, p, gen in stale:
                try:
                    self._build(k, p, gen, now)
                    self.builds += 1
                except Exception as e:  # chDB raises plain RuntimeErrors; a closed store, a full disk
                    self.errors += 1
                    self.last_error = f"{k.name} partition {p}: {str(e)[:200]}"
            self.built_ms += (time.perf_counter() - t) * 1e3

    def _generations(self, tables: set[str], parts: range) -> dict[tuple[str, int], tuple[int, int]]:
        names = ", ".join(f"'{t}'" for t in sorted(tables))
        rows = self.store.query_rows(
            "SELECT table, partition, sum(rows) AS r, max(max_block_number) AS b FROM system.parts "
            f"WHERE active AND database = currentDatabase() AND table IN ({names}) GROUP BY table, partition")
        out = {}
        for r in rows:
            p = str(r["partition"])
            if p.lstrip("-").isdigit() and int(p) in parts:
                out[(str(r["table"]), int(p))] = (int(r["r"]), int(r["b"]))
        return out

    def _marks(self, kinds: list[str], parts: range) -> dict[tuple[str, int], tuple[int, int]]:
        names = ", ".join(f"'{k}'" for k in kinds)
        rows = self.store.query_rows(
            f"SELECT kind, part, argMax(rows, built_ns) AS r, argMax(block, built_ns) AS b FROM {MARKS_TABLE} "
            f"WHERE kind IN ({names}) AND part >= {parts.start} AND part < {parts.stop} GROUP BY kind, part")
        return {(str(r["kind"]), int(r["part"])): (int(r["r"]), int(r["b"])) for r in rows}

    def _build(self, k: Any, part: int, gen: tuple[int, int], now: int) -> None:
        """One (kind, partition): its old cells dropped, new ones built a slice of processes at a time (each
        statement holds the store's lock, so a view waits for one slice, not the partition), then marked."""
        self.store.query(f"ALTER TABLE {LOD_TABLE} DROP PARTITION ({part}, '{k.name}')")
        if gen[0]:
            src = Source(k.name, k.table, k.pid, k.tid, k.start, k.dur, k.cls, k.comm)
            lo, hi = part * PARTITION_NS, (part + 1) * PARTITION_NS
            counts = self.store.query_rows(
                f"SELECT toUInt32({k.pid}) AS p, count() AS n FROM {k.table} WHERE {k.start} >= {lo} "
                f"AND {k.start} < {hi} GROUP BY p ORDER BY p")
            for pids in pid_chunks([(int(r["p"]), int(r["n"])) for r in counts], CHUNK_ROWS):
                for sql in _build_sql(src, part, pids):
                    self.store.query(sql)
                time.sleep(0.002)    # let a waiting view take the store between slices
        self.store.query(f"INSERT INTO {MARKS_TABLE} VALUES ('{k.name}', {part}, {gen[0]}, {gen[1]}, {now})")
