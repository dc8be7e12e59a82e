"""Rows with impossible times or ids are counted and never stored (agent/row_checks.py).

Seen in a real recording: off-CPU rows 11 hours in the future with an end before
their start and a waker tgid made of ASCII bytes. One such row becomes a partition
that retention keeps while it drops live data, so the agent refuses them.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from kprobe.agent.recorder import Batch, Recorder, RecorderConfig
from kprobe.agent.row_checks import impossible
from kprobe.schemas import layouts as L
from kprobe.schemas.tables import BY_NAME
from kprobe.sinks.chdb_store import ChdbStore
from kprobe.sinks.store_sink import StoreSink


def _offcpu(n: int, now: int) -> np.ndarray:
    r = np.zeros(n, dtype=L.KP_OFFCPU)
    r["off_ns"] = now - 2_000_000
    r["on_ns"] = now - 1_000_000
    r["wake_ns"] = now - 1_500_000
    r["tgid"] = r["tid"] = 4242
    r["reason"] = 2
    r["sys_nr"] = -1
    r["comm"] = b"victim"
    return r


def _corrupt(r: np.ndarray, now: int) -> None:
    """The shapes seen for real, one per row from index 1."""
    r["off_ns"][1] = now + 11 * 3600 * 10**9          # 11 h ahead
    r["on_ns"][2] = r["off_ns"][2] - 5                  # end before start (a negative duration)
    r["wake_ns"][3] = r["on_ns"][3] + 10                # woken after it was back on the CPU
    r["waker_tgid"][4] = 1953722224                     # ASCII "test" in an id
    r["on_ns"][5] = 0                                   # never came back, yet emitted


def test_impossible_rows_are_found_and_good_ones_kept():
    now = time.monotonic_ns()
    r = _offcpu(8, now)
    _corrupt(r, now)
    assert impossible(r, now).tolist() == [False, True, True, True, True, True, False, False]
    fine = _offcpu(3, now)
    fine["wake_ns"][0] = 0                              # preempted: no wake-up is fine
    assert not impossible(fine, now).any()


def test_recorder_counts_rejected_rows_and_stores_the_rest(tmp_path: Path):
    store = ChdbStore(tmp_path / "store")
    try:
        rec = Recorder(RecorderConfig(), StoreSink(store))
        now = time.monotonic_ns()
        r = _offcpu(8, now)
        _corrupt(r, now)
        rec._write_batch(Batch(BY_NAME["offcpu"], r, 0))
        assert rec.stats.rejected == {"offcpu": 5}
        assert rec.stats.written == {"offcpu": 3}
        assert store.query_rows("SELECT count() AS n, max(dur_ns) AS d FROM offcpu") == [{"n": 3, "d": 1_000_000}]
    finally:
        store.close()
