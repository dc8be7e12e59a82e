"""Retention against the real chDB store: the bucket being written survives, a bad timestamp decides
nothing, the size cap holds while one bucket is being written, the newest data stays."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kprobe.schemas.store_tables import PARTITION_MINUTES
from kprobe.sinks.chdb_store import ChdbStore

BUCKET = PARTITION_MINUTES * 60 * 10**9
NOW = (1_796_000_000 * 10**9 // BUCKET) * BUCKET + 5 * 60 * 10**9  # 5 minutes into a bucket, fixed
CURRENT = NOW // BUCKET


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ChdbStore]:
    s = ChdbStore(tmp_path)
    try:
        yield s
    finally:
        s.close()


def _fill(store: ChdbStore, start_ns: int, end_ns: int, rows: int) -> None:
    """``rows`` offcpu rows spread evenly over [start, end), incompressible enough to weigh something."""
    step = max(1, (end_ns - start_ns) // rows)
    store.query(f"INSERT INTO offcpu (ts, tid, tgid, dur_ns) SELECT {start_ns} + number * {step}, "
                f"rand(), rand(1), rand64() FROM numbers({rows})")
    store.query("OPTIMIZE TABLE offcpu FINAL")


def _buckets(store: ChdbStore) -> dict[int, int]:
    rows = store.query_rows(f"SELECT intDiv(ts, {BUCKET}) AS b, count() AS n FROM offcpu GROUP BY b")
    return {int(r["b"]): int(r["n"]) for r in rows}


def _bytes(store: ChdbStore) -> int:
    return store.disk_bytes()


def test_the_bucket_being_written_is_never_dropped(store: ChdbStore) -> None:
    _fill(store, (CURRENT - 3) * BUCKET, (CURRENT - 2) * BUCKET, 200_000)
    _fill(store, CURRENT * BUCKET, NOW, 200_000)
    store.enforce_retention(None, 1, NOW)  # a cap nothing fits under
    b = _buckets(store)
    assert CURRENT - 3 not in b
    assert b.get(CURRENT, 0) > 0  # trimmed, not dropped
    newest = store.query_rows("SELECT max(ts) AS m FROM offcpu")[0]["m"]
    assert int(newest) >= NOW - BUCKET // 1000  # the newest rows are the ones kept


def test_one_future_timestamp_does_not_decide_what_is_kept(store: ChdbStore) -> None:
    _fill(store, (CURRENT - 2) * BUCKET, (CURRENT - 1) * BUCKET, 200_000)
    _fill(store, (CURRENT - 1) * BUCKET, CURRENT * BUCKET, 200_000)
    _fill(store, CURRENT * BUCKET, NOW, 200_000)
    store.query(f"INSERT INTO offcpu (ts, tid) VALUES ({NOW + 11 * 3600 * 10**9}, 1)")  # a corrupt row 11 h ahead
    total = _bytes(store)
    store.enforce_retention(6 * 3600 * 10**9, total - 1, NOW)  # just over the cap: one partition must go
    b = _buckets(store)
    assert (NOW + 11 * 3600 * 10**9) // BUCKET not in b
    assert {CURRENT - 2, CURRENT - 1, CURRENT} <= set(b)  # all real data kept
    assert store.last_retention["future_dropped"] == 1


def test_future_partitions_beyond_the_age_window_go_without_size_pressure(store: ChdbStore) -> None:
    _fill(store, CURRENT * BUCKET, NOW, 1000)
    store.query(f"INSERT INTO offcpu (ts, tid) VALUES ({NOW + 2 * 3600 * 10**9}, 1), ({NOW + 7 * 60 * 10**9}, 2)")
    store.enforce_retention(3600 * 10**9, None, NOW)
    b = _buckets(store)
    assert (NOW + 2 * 3600 * 10**9) // BUCKET not in b  # further ahead than the age limit: gone
    assert CURRENT in b and CURRENT + 1 in b  # the next bucket is plausible (a clock a few minutes ahead)


def test_size_cap_holds_while_one_bucket_is_being_written(store: ChdbStore) -> None:
    _fill(store, CURRENT * BUCKET, NOW, 1_000_000)
    before = _bytes(store)
    cap = before // 4
    store.enforce_retention(6 * 3600 * 10**9, cap, NOW)
    after = _bytes(store)
    assert after <= cap, (before, after, cap)
    kept = store.query_rows("SELECT min(ts) AS lo, max(ts) AS hi, count() AS n FROM offcpu")[0]
    assert int(kept["hi"]) == CURRENT * BUCKET + 999_999 * ((NOW - CURRENT * BUCKET) // 1_000_000)  # newest row kept
    assert 0 < int(kept["n"]) < 1_000_000 and int(kept["lo"]) > CURRENT * BUCKET  # the oldest went


def test_newest_data_kept_across_buckets_not_whole_buckets_swinging(store: ChdbStore) -> None:
    for b in range(CURRENT - 4, CURRENT):
        _fill(store, b * BUCKET, (b + 1) * BUCKET, 200_000)
    _fill(store, CURRENT * BUCKET, NOW, 100_000)
    per_bucket = _bytes(store) // 4.5
    cap = int(per_bucket * 2.5)  # room for the current bucket, the previous one and part of the one before
    store.enforce_retention(None, cap, NOW)
    b = _buckets(store)
    assert CURRENT in b and CURRENT - 1 in b and b[CURRENT - 1] == 200_000
    assert CURRENT - 4 not in b and CURRENT - 3 not in b
    assert 0 < b.get(CURRENT - 2, 0) < 200_000  # trimmed to what fits: the store stays near its cap
    assert _bytes(store) <= cap
