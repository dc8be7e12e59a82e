"""Every field of every stored row is sane over a recording with heavy process churn.

Fork, exec and exit storms are where per-task state is born and dies mid-event
(task storage created at a first switch or wake-up, freed at exit, task pointers
kept for names): a field left unwritten there shows up as a timestamp hours away,
an end before its start, or binary bytes in a name. The recording is the default
system-wide bounded policy, so every process on the host is in it, not only ours.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Capture, is_root

pytestmark = pytest.mark.kernel

CHURN = """
import os, threading, time
def short():
    time.sleep(0.0005)
for _ in range(20):
    ts = [threading.Thread(target=short) for _ in range(20)]
    for t in ts: t.start()
    for t in ts: t.join()
    pids = []
    for _ in range(10):
        pid = os.fork()
        if pid == 0:
            if os.getpid() % 2:
                os.execv("/bin/true", ["true"])
            time.sleep(0.002)
            os._exit(3)
        pids.append(pid)
    for p in pids: os.waitpid(p, 0)
"""

MAX_DUR_NS = 3600 * 10**9
PID_MAX = 1 << 22


@pytest.fixture
def system_capture(tmp_path: Path, probes_built: None) -> Iterator[Capture]:
    if not is_root():
        pytest.skip("attaching eBPF probes needs root (CI runs as root)")
    c = Capture(tmp_path / "data", filter_on=False, detail="bounded", min_offcpu_ns=50_000,
                min_syscall_ns=100_000, sock_flush_ms=100)
    try:
        yield c
    finally:
        c.stop()


def _printable(s: str) -> bool:
    return all(ch.isprintable() for ch in s)


def test_every_field_is_sane_under_fork_exec_exit_storms(system_capture):
    c = system_capture
    t0 = time.time_ns()
    for _ in range(3):
        subprocess.run([sys.executable, "-c", CHURN], check=True, timeout=120)
        subprocess.run(["sh", "-c", "for i in $(seq 200); do /bin/true; done"], check=True, timeout=120)
    t1 = time.time_ns()
    c.settle()
    lo, hi = t0 - 10**9, t1 + 10 * 10**9

    q = c.session.store.query_rows
    n = q("SELECT count() AS n FROM offcpu")[0]["n"]
    assert int(n) > 1000, "the churn produced too few off-CPU rows to check anything"
    bad = q(f"""SELECT * FROM offcpu WHERE NOT (
            ts BETWEEN {lo} AND {hi} AND end_ts >= ts AND dur_ns = end_ts - ts AND dur_ns < {MAX_DUR_NS}
            AND (wake_ts = 0 OR (wake_ts >= ts AND wake_ts <= end_ts))
            AND blocked_ns + runq_ns = dur_ns
            AND tgid < {PID_MAX} AND tid < {PID_MAX} AND waker_tgid < {PID_MAX} AND preemptor_tgid < {PID_MAX}
            AND displaced_tgid < {PID_MAX}
            AND reason IN ('preempted', 'sleep', 'uninterruptible', 'other', 'new')
            AND (displaced_since = 0 OR displaced_since <= end_ts)
            AND (skaddr = 0) = (saddr = '')) LIMIT 5""")
    assert not bad, bad
    names = q("SELECT DISTINCT comm, preemptor_comm, waker_comm, displaced_comm, preemptor_process, "
              "waker_process, displaced_process FROM offcpu")
    assert all(_printable(v) for r in names for v in r.values()), [r for r in names if not all(
        _printable(v) for v in r.values())][:5]
    # new tasks: first runs of forked children that waited long enough to be rows
    news = q(f"SELECT count() AS n FROM offcpu WHERE reason = 'new' AND ts BETWEEN {lo} AND {hi}")
    assert int(news[0]["n"]) >= 10, news

    procs = q(f"SELECT kind, count() AS n FROM proc WHERE ts BETWEEN {lo} AND {hi} GROUP BY kind")
    kinds = {r["kind"]: int(r["n"]) for r in procs}
    assert kinds.get("fork", 0) >= 600 and kinds.get("exit", 0) >= 600 and kinds.get("exec", 0) >= 600, kinds
    assert not q(f"SELECT * FROM proc WHERE NOT (ts BETWEEN {lo} AND {hi + 10**9}) LIMIT 5")
    for table, cond in (("fault", f"ts BETWEEN {lo} AND {hi} AND count > 0"),
                        ("syscall", f"ts BETWEEN {lo} AND {hi} AND end_ts >= ts"),
                        ("reclaim", f"end_ts >= ts AND ts BETWEEN {lo} AND {hi}"),
                        ("tcp_state", f"ts BETWEEN {lo} AND {hi}"),
                        ("block_io", f"(ts = 0 OR end_ts >= ts) AND end_ts BETWEEN {lo} AND {hi}")):
        bad = q(f"SELECT * FROM {table} WHERE NOT ({cond}) LIMIT 5")
        assert not bad, (table, bad)
    # nothing rejected means the kernel wrote every field; a rejection would be counted, not stored
    rec = c.session.recorder.stats
    assert rec.rejected == {}, rec.rejected


def test_small_tables_wait_for_the_complete_flush_and_a_query_flush_writes_them(tmp_path, probes_built):
    """A table with few rows is inserted every hold_ms, not every flush_ms (each embedded insert costs the
    same whatever its size); a query's flush request still writes everything at once."""
    if not is_root():
        pytest.skip("attaching eBPF probes needs root (CI runs as root)")
    from kprobe.agent.probeset import ProbeConfig
    from kprobe.agent.recorder import RecorderConfig
    from kprobe.embedded import EmbeddedSession

    s = EmbeddedSession(tmp_path / "data", RecorderConfig(probes=ProbeConfig(filter_on=True), flush_ms=100,
                                                          hold_ms=4000)).start()
    try:
        def procs(pid: int) -> int:
            return int(s.store.query_rows(f"SELECT count() AS n FROM proc WHERE tgid = {pid}")[0]["n"])

        p = subprocess.Popen(["sh", "-c", "read x; /bin/true; /bin/true"], stdin=subprocess.PIPE)
        s.recorder.watch_pid(p.pid)
        p.communicate(b"go\n", timeout=10)
        s.recorder.wait_drained(5)        # a complete flush: the clock of the hold starts here
        p2 = subprocess.Popen(["sh", "-c", "read x; /bin/true"], stdin=subprocess.PIPE)
        s.recorder.watch_pid(p2.pid)
        p2.communicate(b"go\n", timeout=10)
        time.sleep(1.0)                   # ten flush periods: the big tables' cadence
        assert procs(p.pid) >= 2 and procs(p2.pid) == 0, "a small batch was inserted before its hold ran out"
        deadline = time.monotonic() + 10
        while procs(p2.pid) == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert procs(p2.pid) >= 2, "a held batch never reached the store"
    finally:
        s.stop()
