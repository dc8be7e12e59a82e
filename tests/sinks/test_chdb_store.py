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


def test_a_store_from_an_older_kprobe_gets_the_new_columns_in_place(tmp_path: Path) -> None:
    """A data directory whose offcpu table predates the displaced_* columns: opening it adds them after
    their predecessors (inserts name no columns), old rows read 0/'' and new rows keep every value."""
    from dataclasses import replace

    from kprobe.schemas.store_tables import table_defs
    from kprobe.sinks.ddl import ServerFeatures, create_table_sql

    full = next(d for d in table_defs() if d.name == "offcpu")
    old = replace(full, columns=tuple(c for c in full.columns if not c.name.startswith("displaced_")))
    store = ChdbStore(tmp_path / "store")
    try:
        store.query("DROP TABLE offcpu")
        store.query(create_table_sql(old, ServerFeatures.full()))
        store.query("INSERT INTO offcpu (ts, tgid, comm) VALUES (1, 7, 'before')")
    finally:
        store.close()
    store = ChdbStore(tmp_path / "store")        # reopened by the new version
    try:
        names = [r["name"] for r in store.query_rows(
            "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'offcpu' ORDER BY position")]
        assert names == [c.name for c in full.columns]
        cols = {k: np.zeros(2, dtype=v.dtype) if v.dtype != object else np.array(["", ""], dtype=object)
                for k, v in BY_NAME["offcpu"].empty().items()}
        cols.update(ts=np.array([2, 3], dtype=np.uint64), tgid=np.array([8, 9], dtype=np.uint32),
                    displaced_tgid=np.array([30, 31], dtype=np.uint32),
                    displaced_comm=np.array(["batch-job", "kworker/1:2H"], dtype=object),
                    host=np.array(["h", "h"], dtype=object), service=np.array(["s", "s"], dtype=object))
        assert store.write("offcpu", cols) == 2
        rows = store.query_rows("SELECT ts, tgid, displaced_tgid, displaced_comm FROM offcpu ORDER BY ts")
    finally:
        store.close()
    assert [(int(r["tgid"]), int(r["displaced_tgid"]), r["displaced_comm"]) for r in rows] == [
        (7, 0, ""), (8, 30, "batch-job"), (9, 31, "kworker/1:2H")]
