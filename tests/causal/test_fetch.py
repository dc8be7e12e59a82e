"""fetch_evidence's statement plan: which tables each round reads (a scripted store answers the SQL).

Why: each table branch costs chDB a few ms whatever it reads, so block I/O, file
opens and retransmits are read only once a disk or socket wait needs them. These
tests pin that plan: what is skipped, and that a needed table is still read.
"""

from __future__ import annotations

import re

from kprobe.causal.fetch import fetch_evidence
from kprobe.causal.model import Interval

T0 = 1_700_000_000_000_000_000
MS = 1_000_000


class ScriptedStore:
    """Answers each UNION ALL branch by its tag from canned rows; records the tags of every statement."""

    def __init__(self, rows: dict[str, list[list]]):
        self.rows = rows
        self.statements: list[list[str]] = []

    def query_rows(self, sql: str) -> list[dict]:
        tags = re.findall(r"SELECT '(\w+)' AS k", sql)
        self.statements.append(tags)
        return [{"k": t, "v": [str(x) for x in v]} for t in tags for v in self.rows.get(t, [])]


def _off(reason: str, wake: int = 0) -> list:
    # tgid tid comm ts end_ts wake_ts reason cpu_off cpu_on p_tgid p_tid p_comm w_tgid w_tid w_comm
    return [7, 7, "victim", T0 + 10 * MS, T0 + 90 * MS, wake, reason, 1, 1, 0, 0, "", 0, 0, ""]


def test_no_disk_or_socket_wait_reads_no_block_io_fd_open_or_retransmits():
    st = ScriptedStore({"offcpu": [_off("preempted")]})
    fetch_evidence(st, Interval(7, T0, T0 + 100 * MS))
    read = {t for s in st.statements for t in s}
    assert st.statements[0] == ["offcpu", "sock_io", "syscall", "fault", "reclaim", "reclaim_total"]
    assert not read & {"block_io", "fd_open", "tcp_retrans"}
    assert len(st.statements) == 1


def test_a_disk_wait_reads_block_io_and_the_victims_opens_in_one_more_statement():
    io = [9, 9, "writer", T0 + 20 * MS, T0 + 80 * MS, 4096, "WS", 8]
    st = ScriptedStore({"offcpu": [_off("uninterruptible", T0 + 85 * MS)], "block_io": [io],
                        "fd_open": [[7, 3, T0, "/ledger"]]})
    ev = fetch_evidence(st, Interval(7, T0, T0 + 100 * MS))
    assert len(st.statements) == 2 and {"fd_open", "block_io"} <= set(st.statements[1])   # with the round of wake calls
    assert ev.block_io and ev.block_io[0].dev == 8 and ev.comms[9] == "writer"
    assert [f.path for f in ev.fd_open] == ["/ledger"]


def test_sql_reclaim_totals_equal_the_python_ones_on_chdb(tmp_path):
    """Round 0 ranks reclaimers from SQL totals; the dataflow derives them in Python: same numbers."""
    import numpy as np

    from kprobe.causal.fetch import Reclaim, reclaim_totals
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
