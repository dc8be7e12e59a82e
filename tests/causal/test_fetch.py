"""fetch_evidence's statement plan: one window read, or targeted rounds (a scripted store answers the SQL).

Why: each table branch costs chDB a few ms whatever it reads, so a window is read
in one statement and the rounds run on its rows in memory; only a window too big
for that is followed round by round, and there block I/O and retransmits are read
only once a disk or socket wait needs them. These tests pin that plan. That both
paths select the same rows is checked on real kernel data by the causal kernel
tests (tests/causal/conftest.py ``why_both_ways``).
"""

from __future__ import annotations

import json
import re

from kprobe.causal.fetch import fetch_evidence
from kprobe.causal.model import Interval

T0 = 1_700_000_000_000_000_000
MS = 1_000_000
ALL_TABLES = {"offcpu", "syscall", "syscall_before", "sock_io", "fault", "fd_open", "reclaim", "reclaim_total", "cgroup_cpu", "cpu_irq", "block_io", "tcp_retrans",
              "memcg_members"}
ROUND0 = ["offcpu", "sock_io", "syscall", "fault", "fd_open", "reclaim", "reclaim_total", "cgroup_cpu", "cpu_irq"]


class ScriptedStore:
    """Answers each UNION ALL branch by its tag from canned rows (field order); records every statement's tags."""

    def __init__(self, rows: dict[str, list[list]]):
        self.rows = rows
        self.statements: list[list[str]] = []

    def query(self, sql: str, fmt: str = "JSONEachRow") -> bytes:
        assert fmt == "TabSeparatedRaw"
        tags = re.findall(r"SELECT '(\w+)', toJSONString", sql)
        self.statements.append(tags)
        return b"".join(f"{t}\t{json.dumps(self.rows.get(t, []))}\n".encode() for t in tags)

    def query_rows(self, sql: str) -> list[dict]:
        raise AssertionError("fetch reads through query()")


def _off(reason: str, wake: int = 0) -> list:
    # tgid tid comm ts end_ts wake_ts reason cpu_off cpu_on p_tgid p_tid p_comm w_tgid w_tid w_comm
    return [7, 7, "victim", T0 + 10 * MS, T0 + 90 * MS, wake, reason, 1, 1, 0, 0, "", 0, 0, ""]


def _disk_wait_store() -> ScriptedStore:
    io = [9, 9, "writer", T0 + 20 * MS, T0 + 80 * MS, 4096, "WS", 8]
    return ScriptedStore({"offcpu": [_off("uninterruptible", T0 + 85 * MS)], "block_io": [io],
                          "fd_open": [[7, 3, T0, "/ledger"]]})


def test_a_window_is_read_in_one_statement_and_followed_in_memory():
    st = _disk_wait_store()
    ev = fetch_evidence(st, Interval(7, T0, T0 + 100 * MS))
    assert len(st.statements) == 1 and set(st.statements[0]) == ALL_TABLES and ev.queries == 1
    assert ev.block_io and ev.block_io[0].dev == 8 and ev.comms[9] == "writer"
    assert [f.path for f in ev.fd_open] == ["/ledger"]


def test_a_table_at_the_window_limit_falls_back_to_rounds_on_the_store():
    st = ScriptedStore({"offcpu": [_off("preempted"), _off("sleep")]})
    ev = fetch_evidence(st, Interval(7, T0, T0 + 100 * MS), window_limit=2)
    assert set(st.statements[0]) == ALL_TABLES and st.statements[1] == ROUND0
    assert len(ev.offcpu[7]) == 2


def test_rounds_without_a_disk_or_socket_wait_read_no_block_io_or_retransmits():
    st = ScriptedStore({"offcpu": [_off("preempted")]})
    fetch_evidence(st, Interval(7, T0, T0 + 100 * MS), window_limit=0)
    # (an 80 ms preempted wait asks who held its CPU meanwhile: that one statement, no block I/O or retransmits)
    assert st.statements == [ROUND0, ["cpu_rows"]]


def test_rounds_read_block_io_for_a_disk_wait_in_one_more_statement():
    st = _disk_wait_store()
    ev = fetch_evidence(st, Interval(7, T0, T0 + 100 * MS), window_limit=0)
    assert len(st.statements) == 2 and "block_io" in st.statements[1]   # with the round of wake calls
    assert ev.block_io and ev.block_io[0].dev == 8 and ev.comms[9] == "writer"
    assert [f.path for f in ev.fd_open] == ["/ledger"]


def test_sql_reclaim_totals_equal_the_python_ones_on_chdb(tmp_path):
    """Round 0 ranks reclaimers from SQL totals; the dataflow derives them in Python: same numbers."""
    import numpy as np

    from kprobe.causal.records import Reclaim, reclaim_totals
    from kprobe.schemas import layouts as L
    from kprobe.schemas.tables import BY_NAME
    from kprobe.sinks.chdb_store import ChdbStore

    rng = np.random.default_rng(7)
    n = 400
    r = np.zeros(n, dtype=L.KP_RECLAIM)
    r["start_ns"] = np.sort(rng.integers(0, 8_000 * MS, n)).astype(np.uint64)
    r["end_ns"] = r["start_ns"] + rng.integers(0, 300 * MS, n).astype(np.uint64)
    r["tgid"] = rng.choice([11, 12, 13], n)
    r["tid"] = r["tgid"] + rng.integers(0, 2, n)
    r["kind"] = rng.choice([1, 2], n)
    r["cgroup_id"] = rng.choice([5, 6], n)
    r["nr_reclaimed"] = rng.integers(0, 500, n)
    r["comm"] = [f"c{t}-{i // 100}".encode() for i, t in enumerate(r["tgid"])]
    store = ChdbStore(tmp_path / "data")
    try:
        cols = BY_NAME["reclaim"].columns(r, T0)
        store.write("reclaim", {**cols, "host": np.full(n, "h", dtype=object), "service": np.full(n, "", dtype=object)})
        iv = Interval(99, T0 + 5_500 * MS, T0 + 7_000 * MS)
        ev = fetch_evidence(store, iv)
        rows = [Reclaim(int(x["tgid"]), int(x["tid"]), x["comm"].split(b"\0")[0].decode(), "direct" if x["kind"] == 1
                        else "memcg", T0 + int(x["start_ns"]), T0 + int(x["end_ns"]), int(x["nr_reclaimed"]), 0,
                        int(x["cgroup_id"])) for x in r]
        want = reclaim_totals(rows, iv.start_ns - 5_000 * MS, iv.end_ns)
        assert ev.reclaim_totals is not None and set(ev.reclaim_totals) == set(want)
        assert len(want) == 6 and all(t.stall_ns > 0 for t in want)
        assert {(x.tgid, x.ts) for x in ev.reclaims} == {(x.tgid, x.ts) for x in rows
                                                        if x.end_ts >= iv.start_ns and x.ts <= iv.end_ns}
    finally:
        store.close()


def test_a_run_queue_wait_reads_every_threads_rows_on_its_cpu_over_the_wait_only():
    """Who held the CPU a woken thread waited for is read from all threads' switches there (a CPU hog that never
    blocks shows only in other threads' rows), within the same statements: in memory from the window read, and
    as one more branch of a round on the store; rows on other CPUs or outside the wait are not read."""
    victim = [7, 7, "victim", T0 + 10 * MS, T0 + 90 * MS, T0 + 20 * MS, "sleep", 1, 1, 0, 0, "", 0, 0, ""]
    # the hog came back at 16 (before the wake-up at 20): that switch says it held CPU 1 when the wait began
    hog = [30, 30, "hog", T0 + 15 * MS, T0 + 16 * MS, 0, "preempted", 1, 1, 40, 40, "tool", 0, 0, ""]
    elsewhere = [50, 50, "other", T0 + 30 * MS, T0 + 40 * MS, 0, "preempted", 0, 0, 7, 7, "victim", 0, 0, ""]
    before = [51, 51, "early", T0 - 1500 * MS, T0 - 1200 * MS, 0, "preempted", 1, 1, 30, 30, "hog", 0, 0, ""]
    st = ScriptedStore({"offcpu": [victim, hog, elsewhere, before], "cpu_rows": [hog]})
    ev = fetch_evidence(st, Interval(7, T0, T0 + 100 * MS))
    assert len(st.statements) == 1
    assert [(r.tid, r.cpu_on) for r in ev.cpu_rows] == [(30, 1)] and ev.comms[30] == "hog"
    st = ScriptedStore({"offcpu": [victim], "cpu_rows": [hog]})
    ev = fetch_evidence(st, Interval(7, T0, T0 + 100 * MS), window_limit=0)
    assert len(st.statements) == 2 and "cpu_rows" in st.statements[1]
    assert [r.tid for r in ev.cpu_rows] == [30]
