"""The timeline's level-of-detail cells answer exactly what the raw rows answer.

Why: wide views read their sums from cells built once per closed partition (api/timeline_levels.py);
a cell that drifted from the rows (a wrong duration class, a bucket edge, a partition rebuilt late)
would draw density that is not there. Ground truth is the raw rows in a real chDB store, written
through ``ChdbStore.write`` like the recorder's (bench/api_timeline.py's synthetic trading host):
every answer from the levels must equal the same view computed from the raw rows only
(``Window(levels=False)``, a GROUP BY over them), and one lane's sums are recomputed in Python
from its fetched rows.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from api_timeline import fill  # noqa: E402

from kprobe.api.timeline_levels import PARTITION_NS, Levels, ladder_bucket, tile  # noqa: E402
from kprobe.api.timeline_lod import Window, timeline  # noqa: E402
from kprobe.sinks.chdb_store import ChdbStore  # noqa: E402

MS = 1_000_000
# two stretches of a busy host: one inside a partition, one across a partition edge (9 x 10 min)
BASE = 5_000_000 * MS
EDGE = 9 * PARTITION_NS - 300 * MS


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbStore]:
    s = ChdbStore(tmp_path_factory.mktemp("lod"))
    fill(s, 120_000, 1000 * MS, seed=3, base_ns=BASE)
    fill(s, 60_000, 600 * MS, seed=4, base_ns=EDGE)
    try:
        yield s
    finally:
        s.close()


def _sums(ans: dict[str, Any]) -> list[tuple]:
    b = ans["buckets"]
    return sorted(zip(b["lane"], b["row"], b["cls"], b["b"], b["n"], b["busy_ns"], strict=True))


def _same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["lanes"] == b["lanes"]
    assert (a["bucket_ns"], a["bucket0_ns"]) == (b["bucket_ns"], b["bucket0_ns"])
    assert sorted(map(repr, a["items"])) == sorted(map(repr, b["items"]))
    assert _sums(a) == _sums(b)
    assert a["truncated"] == b["truncated"]


WINDOWS = [  # (from, to, width): aligned, unaligned, one cell, across the partition edge, an hour
    (BASE, BASE + 1000 * MS, 1200), (BASE + 123_457, BASE + 777_777_777, 800), (BASE - 50 * MS, BASE + 70 * MS + 3, 100),
    (BASE + 333 * MS + 17, BASE + 4000 * MS + 5, 4000), (EDGE, EDGE + 600 * MS, 1000),
    (EDGE + 250 * MS + 1, EDGE + 420 * MS - 1, 150), (BASE - 1800 * 1000 * MS, BASE + 1800 * 1000 * MS, 1200),
]


@pytest.mark.parametrize("f, t, width", WINDOWS)
def test_levels_answer_what_the_raw_rows_answer(store: ChdbStore, f: int, t: int, width: int) -> None:
    levels = Levels(store, background=False)
    for pids in ((), (3000,)):
        lod = timeline(store, Window(f, t, width, pids), levels)
        raw = timeline(store, Window(f, t, width, pids, levels=False), levels)
        assert lod["lod"]["level_ns"] is not None and raw["lod"]["level_ns"] is None, lod["lod"]
        assert lod["buckets"]["b"], "a window over the rows sums some of them"
        _same(lod, raw)


def test_one_lane_recomputed_from_its_rows(store: ChdbStore) -> None:
    """The sums of the busiest lane's off-CPU row, recomputed here from its fetched rows."""
    f, t, width = BASE + 10 * MS + 3, BASE + 910 * MS, 900
    ans = timeline(store, Window(f, t, width), Levels(store, background=False))
    assert ans["lod"]["level_ns"] == 1 * MS
    lane = max(range(len(ans["lanes"])), key=lambda i: ans["buckets"]["lane"].count(i))
    ln = ans["lanes"][lane]
    b = ladder_bucket(t - f, width)
    c0 = f // b
    rows = store.query_rows(f"SELECT ts, end_ts FROM offcpu WHERE tgid = {ln['tgid']} AND tid = {ln['tid']} "
                            f"AND ts >= {c0 * b} AND ts < {-(-t // b) * b}")
    want: dict[int, list[int]] = {}
    for r in rows:
        s, e = int(r["ts"]), int(r["end_ts"])
        if e - s < b:
            cell = want.setdefault(s // b - c0, [0, 0])
            cell[0] += 1
            cell[1] += e - s
    B = ans["buckets"]
    got = {B["b"][i]: [B["n"][i], B["busy_ns"][i]] for i in range(len(B["b"]))
           if B["lane"][i] == lane and B["row"][i] == "offcpu"}
    assert got == want and len(got) > 100


def test_a_partition_whose_rows_changed_is_rebuilt_in_the_background(store: ChdbStore) -> None:
    """Rows added to a built partition: the next view is answered from the raw rows while its cells are
    rebuilt on the builder's thread, the one after from the new cells, equal to the raw rows again."""
    levels = Levels(store)
    w = Window(BASE, BASE + 1000 * MS, 1200)
    timeline(store, w, levels)
    levels.wait()
    first = timeline(store, w, levels)
    assert first["lod"]["level_ns"] == 1 * MS
    builds = levels.builds
    fill(store, 5_000, 1000 * MS, seed=9, base_ns=BASE)
    during = timeline(store, w, levels)
    assert during["lod"]["level_ns"] is None, "stale cells are never read"
    levels.wait()
    after = timeline(store, w, levels)
    assert after["lod"]["level_ns"] == 1 * MS and levels.builds > builds and levels.errors == 0
    assert _sums(after) != _sums(first) and _sums(during) == _sums(after)
    _same(after, timeline(store, Window(BASE, BASE + 1000 * MS, 1200, levels=False), levels))


def test_a_partition_still_written_is_read_raw(store: ChdbStore) -> None:
    """Rows of the last minute: their partition may still grow, so no cells are built for it (one embedded
    chDB engine per process: the module's store)."""
    now = time.time_ns()
    fill(store, 2_000, 100 * MS, seed=5, base_ns=now - 200 * MS)
    levels = Levels(store, background=False)
    ans = timeline(store, Window(now - 300 * MS, now, 200), levels)
    assert ans["lod"]["level_ns"] is None and ans["buckets"]["b"] and levels.builds == 0


def test_tiles_cover_the_window_with_whole_cells() -> None:
    f, t = BASE + 1_234_567, BASE + 3_500 * MS + 7
    cells = tile(f, t)
    assert [lv for lv, _, _ in cells][0] == 1000 * MS
    covered = sorted((a, z) for _, a, z in cells)
    assert all(a % lv == 0 and z % lv == 0 for lv, a, z in cells)
    assert covered[0][0] - f < MS and t - covered[-1][1] < MS
    assert all(x[1] == y[0] for x, y in zip(covered, covered[1:], strict=False))


def test_pid_chunks_cover_every_process_once() -> None:
    from kprobe.api.timeline_levels import pid_chunks

    counts = [(1, 50), (2, 60), (3, 500), (7, 10), (9, 10), (12, 95)]
    chunks = pid_chunks(counts, 100)
    assert chunks == [(1, 1), (2, 2), (3, 3), (7, 9), (12, 12)]
    assert pid_chunks([], 100) == []


def test_retention_drops_a_buckets_cells_with_its_rows(store: ChdbStore) -> None:
    """Cells are sums of a bucket's rows: cells left from a bucket whose rows are gone (an orphan) go at the
    next retention pass, and when retention drops a bucket (here by age) its cells go with it. Cells kept
    would count towards the size cap and push live rows out. (Last in this file: it empties the module store.)"""
    from kprobe.api.timeline_levels import LOD_TABLE

    levels = Levels(store, background=False)
    for f, t in ((EDGE, EDGE + 600 * MS), (BASE, BASE + 1000 * MS)):
        timeline(store, Window(f, t, 800), levels)

    def cell_buckets() -> set[int]:
        rows = store.query_rows(f"SELECT DISTINCT intDiv(t0, {PARTITION_NS}) AS b FROM {LOD_TABLE}")
        return {int(r["b"]) for r in rows}

    raw = {int(r["b"]) for r in store.query_rows(f"SELECT DISTINCT intDiv(ts, {PARTITION_NS}) AS b FROM offcpu")}
    built = cell_buckets()
    assert built and built <= raw
    orphan = min(raw) - 3
    store.query(f"INSERT INTO {LOD_TABLE} SELECT level, kind, tgid, tid, t0 - {3 * PARTITION_NS}, dclass, n, busy, "
                f"top, named FROM {LOD_TABLE} WHERE intDiv(t0, {PARTITION_NS}) = {min(raw)} LIMIT 10")
    assert orphan in cell_buckets()
    now = (max(raw) + 10) * PARTITION_NS
    store.enforce_retention(None, None, now)                  # nothing is old or too big: only the orphan goes
    assert cell_buckets() == built and store.last_retention["derived_orphans_dropped"] >= 1, store.last_retention
    dropped = store.enforce_retention(PARTITION_NS, None, now)   # every bucket older than its age limit
    assert dropped > 0 and cell_buckets() == set(), store.last_retention
