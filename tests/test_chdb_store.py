"""The embedded store's write path against chDB itself: what goes in comes back, string for string."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kprobe.schemas.tables import BY_NAME
from kprobe.sinks.chdb_store import ChdbStore


def test_low_cardinality_strings_round_trip(tmp_path: Path) -> None:
    et = BY_NAME["syscall"]
    n = 1000
    cols = et.empty()
    rng = np.random.default_rng(7)
    names = np.array(["write", "fsync", "", "sendto", "écrire"], dtype=object)
    cols = {k: np.zeros(n, dtype=v.dtype) if v.dtype != object else None for k, v in cols.items()}
    cols["ts"] = np.arange(n, dtype=np.uint64) + 1_700_000_000_000_000_000
    cols["tid"] = rng.integers(1, 50, n).astype(np.uint32)
    cols["syscall"] = names[rng.integers(0, len(names), n)]
    cols["host"] = np.full(n, "trade-gw-01", dtype=object)
    cols["service"] = np.array(["ledger", "risk"], dtype=object)[cols["tid"] % 2]
    store = ChdbStore(tmp_path / "store")
    try:
        assert store.write("syscall", cols) == n
        rows = store.query_rows("SELECT ts, tid, syscall, host, service FROM syscall ORDER BY ts")
    finally:
        store.close()
    assert [r["syscall"] for r in rows] == cols["syscall"].tolist()
    assert {r["host"] for r in rows} == {"trade-gw-01"}
    assert [r["service"] for r in rows] == cols["service"].tolist()
    assert [int(r["tid"]) for r in rows] == cols["tid"].tolist()
