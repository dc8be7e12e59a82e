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
    assert st.statements[0] == ["offcpu", "sock_io", "syscall", "fault", "reclaim"]
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
