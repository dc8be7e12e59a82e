"""Ground truth on the real kernel: known workloads must show up exactly as they happened."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Capture, is_root

pytestmark = pytest.mark.kernel


def test_sleep_shows_blocked_interval_of_that_length(capture):
    p = capture.workload("sleeper.py", "100", "3", stdout=subprocess.PIPE)
    tid = int(p.stdout.readline())
    assert p.wait(10) == 0
    rows = capture.rows(
        f"SELECT dur_ns, blocked_ns, reason, waker_tid FROM offcpu WHERE tid = {tid} AND blocked_ns > 50000000 ORDER BY ts"
    )
    assert len(rows) == 3, rows
    for r in rows:
        assert r["reason"] == "sleep"
        assert abs(int(r["blocked_ns"]) - 100_000_000) <= 2_000_000, r
        # off-CPU time = blocked + waiting in the run queue after the wakeup (load dependent)
        assert int(r["dur_ns"]) >= int(r["blocked_ns"]), r


def test_pinned_hog_preempts_victim_and_is_named(capture):
    # Round-robin real-time priority for both: on a busy machine ordinary tasks
    # cannot cut in, so the hog is by construction the one the victim waits for.
    cpu = str(os.cpu_count() - 1)
    # Both start before either spins: on a loaded host an interpreter's start-up beside a spinning
    # real-time task could otherwise take most of the victim's 1.5 s (or ten times that).
    victim = capture.spawn("chrt", "-r", "10", "taskset", "-c", cpu, "python3", "-c",
                           "import sys,time\nsys.stdin.readline()\nsys.stdin.readline()\n"
                           "e=time.monotonic()+1.5\nwhile time.monotonic()<e: pass")
    hog = subprocess.Popen(["chrt", "-r", "10", "taskset", "-c", cpu, "python3", "-c",
                            "import time\nprint('spinning', flush=True)\ne=time.monotonic()+30\n"
                            "while time.monotonic()<e: pass"], stdout=subprocess.PIPE)
    try:  # the hog outlives the victim, so they share the CPU for the victim's whole run
        assert hog.stdout.readline().strip() == b"spinning"
        victim.stdin.write(b"hog is spinning\n")
        victim.stdin.flush()
        assert victim.wait(20) == 0
    finally:
        hog.kill()
        hog.wait(5)
    rows = capture.rows(
        f"SELECT preemptor_tgid, count() AS n, sum(dur_ns) AS d FROM offcpu "
        f"WHERE tgid = {victim.pid} AND reason = 'preempted' GROUP BY preemptor_tgid ORDER BY d DESC"
    )
    assert rows, "no preempted intervals recorded for the victim"
    by_hog = [r for r in rows if int(r["preemptor_tgid"]) == hog.pid]
    # sharing one CPU for 1.5 s, the victim waits roughly half of it behind the hog
    assert by_hog and int(by_hog[0]["d"]) > 300_000_000, rows


def test_writes_have_exact_count_fd_and_sizes_and_fsync(capture, tmp_path):
    sizes = [random.randint(1, 9000) for _ in range(37)]
    p = capture.workload("writer.py", str(tmp_path / "ledger"), ",".join(map(str, sizes)), stdout=subprocess.PIPE)
    fd, before, after = (int(x) for x in p.stdout.readline().split())
    assert p.wait(10) == 0
    rows = capture.rows(
        f"SELECT fd, bytes, ret, ts, end_ts FROM syscall WHERE tgid = {p.pid} AND syscall = 'write' AND fd = {fd} ORDER BY ts"
    )
    assert [int(r["bytes"]) for r in rows] == sizes
    assert all(int(r["fd"]) == fd for r in rows)
    # the wall-clock stamps taken around the writes bracket their stored UTC timestamps
    assert before <= int(rows[0]["ts"]) and int(rows[-1]["end_ts"]) <= after, (before, rows[0], rows[-1], after)
    fsyncs = capture.rows(f"SELECT fd, ret FROM syscall WHERE tgid = {p.pid} AND syscall = 'fsync'")
    assert fsyncs == [{"fd": fd, "ret": 0}]
    opened = capture.rows(f"SELECT path FROM fd_open WHERE tgid = {p.pid} AND fd = {fd}")
    assert {"path": str(tmp_path / "ledger")} in opened


def test_tcp_connection_has_four_tuple_and_byte_totals(capture):
    port = random.randint(20000, 40000)
    sizes = [1000, 70000, 5, 123456]
    server = capture.workload("tcp_pair.py", "server", str(port), stdout=subprocess.PIPE)
    assert server.stdout.readline().strip() == b"listening"
    client = capture.workload("tcp_pair.py", "client", str(port), ",".join(map(str, sizes)), stdout=subprocess.PIPE)
    cport = int(client.stdout.readline().split()[0])
    total, _, peer_port = (int(x) for x in server.stdout.readline().split())
    assert client.wait(10) == 0 and server.wait(10) == 0
    assert total == sum(sizes) and peer_port == cport
    sent = capture.rows(
        f"SELECT saddr, sport, daddr, dport, sum(bytes) AS b FROM sock_io WHERE tgid = {client.pid} AND dir = 'send' "
        "GROUP BY saddr, sport, daddr, dport"
    )
    assert sent == [{"saddr": "127.0.0.1", "sport": cport, "daddr": "127.0.0.1", "dport": port, "b": sum(sizes)}]
    recv = capture.rows(
        f"SELECT saddr, sport, daddr, dport, sum(bytes) AS b FROM sock_io WHERE tgid = {server.pid} AND dir = 'recv' "
        "GROUP BY saddr, sport, daddr, dport"
    )
    assert recv == [{"saddr": "127.0.0.1", "sport": port, "daddr": "127.0.0.1", "dport": cport, "b": sum(sizes)}]
    states = capture.rows(f"SELECT tgid, sport, dport, newstate FROM tcp_state WHERE dport IN ({port}, {cport}) ORDER BY ts")
    # the client's port is assigned after SYN_SENT, so that transition carries sport 0
    assert {"tgid": client.pid, "sport": 0, "dport": port, "newstate": "SYN_SENT"} in states, states
    both_ends = {(s["sport"], s["dport"]) for s in states if s["newstate"] == "ESTABLISHED"}
    assert both_ends == {(cport, port), (port, cport)}, states


@pytest.fixture
def bounded_capture(tmp_path: Path, probes_built: None) -> Iterator[tuple[Capture, int]]:
    """A capture with `kprobe record`'s default policy (the other tests record every row)."""
    from kprobe.cli.recording import DETAIL_DEFAULTS

    if not is_root():
        pytest.skip("attaching eBPF probes needs root (CI runs as root)")
    min_sys_us, flush_ms = DETAIL_DEFAULTS["bounded"]
    c = Capture(tmp_path / "data", min_syscall_ns=int(min_sys_us * 1000), sock_flush_ms=flush_ms)
    try:
        yield c, flush_ms
    finally:
        c.stop()


def test_bounded_policy_folds_socket_io_and_keeps_byte_totals_exact(bounded_capture):
    """Sends/recvs summed per socket and direction in the kernel, at most one row per interval plus
    the flush at shutdown; the bytes must still add up exactly."""
    cap, flush_ms = bounded_capture
    port = random.randint(20000, 40000)
    sizes = [random.randint(1, 3000) for _ in range(300)]
    server = cap.workload("tcp_pair.py", "server", str(port), stdout=subprocess.PIPE)
    assert server.stdout.readline().strip() == b"listening"
    client = cap.workload("tcp_pair.py", "client", str(port), ",".join(map(str, sizes)), "0.002",
                          stdout=subprocess.PIPE)
    cport, _, took = client.stdout.readline().split()
    assert client.wait(30) == 0 and server.wait(30) == 0
    assert int(server.stdout.readline().split()[0]) == sum(sizes)
    sent = cap.rows(f"SELECT ts, bytes FROM sock_io WHERE tgid = {client.pid} AND dir = 'send' "
                    f"AND sport = {int(cport)} ORDER BY ts")
    recv = cap.rows(f"SELECT sum(bytes) AS b FROM sock_io WHERE tgid = {server.pid} AND dir = 'recv' "
                    f"AND dport = {int(cport)}")
    assert sum(int(r["bytes"]) for r in sent) == sum(sizes)
    assert int(recv[0]["b"]) == sum(sizes)
    # one row per interval at most, plus the first send and the flush at shutdown
    assert len(sent) <= float(took) * 1000 / flush_ms + 3, (len(sent), took)
    gaps_ms = [(int(b["ts"]) - int(a["ts"])) / 1e6 for a, b in zip(sent[:-2], sent[1:-1], strict=True)]
    assert all(g >= flush_ms * 0.9 for g in gaps_ms), gaps_ms  # counted in jiffies: within a tick
    rec = cap.session.recorder
    assert rec.probes is not None
    rec.stats.update_kernel(rec.probes)
    assert rec.stats.counters["sock_io_folded"] >= len(sizes) - len(sent), rec.stats.counters


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[str]:
    """A raw loop device over a sparse file, with the mq-deadline scheduler (requests are queued, then
    dispatched: the path where the dispatching task can differ from the submitting one)."""
    img = tmp_path / "raw.img"
    with open(img, "wb") as f:
        f.truncate(64 << 20)
    dev = subprocess.run(["losetup", "-f", "--show", str(img)], capture_output=True, text=True)
    if dev.returncode != 0:
        pytest.skip(f"no loop device: {dev.stderr.strip()}")
    loop = dev.stdout.strip()
    try:
        sched = Path("/sys/block") / Path(loop).name / "queue" / "scheduler"
        if "mq-deadline" in sched.read_text():
            sched.write_text("mq-deadline")
        yield loop
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)


def test_direct_writes_to_a_disk_are_block_io_of_their_submitter(capture, loop_device):
    n, size = 24, 64 << 10
    p = capture.workload("direct_writer.py", loop_device, str(n), str(size), stdout=subprocess.PIPE)
    assert p.stdout.readline().strip() == b"done" and p.wait(30) == 0
    rdev = os.stat(loop_device).st_rdev
    dev = (os.major(rdev) << 20) | os.minor(rdev)
    rows = capture.rows(f"SELECT tgid, comm, sum(bytes) AS b, min(sector) AS lo, max(sector) AS hi FROM block_io "
                        f"WHERE dev = {dev} AND rwbs LIKE 'W%' GROUP BY tgid, comm")
    assert rows == [{"tgid": p.pid, "comm": Path(sys.executable).name[:15], "b": n * size, "lo": 0, "hi": (n - 1) * size // 512}], rows


def test_touching_fresh_pages_counts_faults(capture):
    m = 5000
    p = capture.workload("toucher.py", str(m), stdout=subprocess.PIPE)
    assert p.stdout.readline().strip() == b"done"
    assert p.wait(10) == 0
    rows = capture.rows(f"SELECT sum(count) AS n, countIf(addr != 0) AS samples FROM fault WHERE tgid = {p.pid}")
    assert int(rows[0]["n"]) >= m, rows
    assert int(rows[0]["samples"]) >= m // 64 // 2, rows


def _memcg(name: str, limit: int) -> tuple[Path, str]:
    v2 = Path("/sys/fs/cgroup/cgroup.controllers")
    if v2.exists():
        cg = Path("/sys/fs/cgroup") / name
        cg.mkdir(exist_ok=True)
        (cg / "memory.max").write_text(str(limit))
        return cg, "cgroup.procs"
    cg = Path("/sys/fs/cgroup/memory") / name
    cg.mkdir(exist_ok=True)
    (cg / "memory.limit_in_bytes").write_text(str(limit))
    return cg, "cgroup.procs"


def test_memcg_limited_reader_shows_reclaim_stalls(capture, tmp_path):
    big = tmp_path / "big"
    with open(big, "wb") as f:
        f.truncate(0)
        chunk = os.urandom(1 << 20)
        for _ in range(192):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())  # clean pages can be evicted; dirty ones would stay cached (and charged to us)
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    subprocess.run(["sh", "-c", "echo 1 > /proc/sys/vm/drop_caches"], check=False)
    cg, procs = _memcg(f"kprobe-test-{os.getpid()}", 32 << 20)
    try:
        p = subprocess.Popen(["python3", str(Path(__file__).parent.parent / "workloads" / "filereader.py"), str(big)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        (cg / procs).write_text(str(p.pid))
        capture.session.recorder.watch_pid(p.pid)
        p.stdin.write(b"go\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == b"done"
        assert p.wait(30) == 0
        rows = capture.rows(
            f"SELECT kind, count() AS n, sum(nr_reclaimed) AS pages, sum(dur_ns) AS d FROM reclaim "
            f"WHERE tgid = {p.pid} GROUP BY kind"
        )
    finally:
        time.sleep(0.2)
        try:
            cg.rmdir()
        except OSError:
            pass
    memcg = [r for r in rows if r["kind"] == "memcg"]
    assert memcg and int(memcg[0]["n"]) > 0 and int(memcg[0]["pages"]) > 0, rows
    assert int(memcg[0]["d"]) > 0


@pytest.mark.parametrize("min_block_us", [10_000_000, 1_000])
def test_fast_block_requests_are_summed_per_submitter_with_exact_totals(tmp_path, probes_built, loop_device, min_block_us):
    """Summed in the kernel (every request, or the sub-millisecond ones of `kprobe record`'s default),
    the submitter's requests, bytes and busy time stay exact, in far fewer rows than requests."""
    if not is_root():
        pytest.skip("attaching eBPF probes needs root (CI runs as root)")
    n, size = 400, 16 << 10
    cap = Capture(tmp_path / "data", min_block_us=min_block_us)
    try:
        p = cap.workload("direct_writer.py", loop_device, str(n), str(size), stdout=subprocess.PIPE)
        assert p.stdout.readline().strip() == b"done" and p.wait(30) == 0
        rdev = os.stat(loop_device).st_rdev
        dev = (os.major(rdev) << 20) | os.minor(rdev)
        cap.settle()   # a query's flush reads the sums too: no waiting for the once-a-second tick
        rows = cap.rows(f"SELECT requests, bytes, busy_ns, max_ns, ts, end_ts, comm FROM block_io "
                        f"WHERE dev = {dev} AND rwbs LIKE 'W%' AND tgid = {p.pid}")
        if sum(r["requests"] for r in rows) != n:
            rec = cap.session.recorder
            rec.stats.update_kernel(rec.probes)
            pytest.fail(f"{sum(r['requests'] for r in rows)} of {n} requests: {rows}; counters "
                        f"{ {k: v for k, v in rec.stats.counters.items() if 'block' in k} }; sums {rec.stats.block_sums}; "
                        f"drops {rec.stats.to_dict().get('drops') if hasattr(rec.stats, 'to_dict') else ''}")
        assert sum(r["bytes"] for r in rows) == n * size
        for r in rows:
            assert r["comm"] == Path(sys.executable).name[:15]
            assert 0 < r["max_ns"] <= r["busy_ns"] and r["max_ns"] <= r["end_ts"] - r["ts"], r
        summed = [r for r in rows if r["requests"] > 1]
        if min_block_us > 1_000_000:
            assert summed and len(rows) <= n // 10, len(rows)   # one row per generation, not per request
        else:  # the default: a request is a row of its own only when it took a millisecond
            assert all(r["max_ns"] < 1_000_000 for r in summed), summed
        rec = cap.session.recorder
        rec.stats.update_kernel(rec.probes)
        assert rec.stats.counters["block_requests_summed"] >= sum(r["requests"] for r in summed)
        assert rec.stats.block_sums["requests"] >= sum(r["requests"] for r in summed)
    finally:
        cap.stop()


@pytest.mark.parametrize("migrate", [False, True], ids=["stays", "migrated-while-queued"])
def test_wakeup_time_is_exact_also_when_the_queued_task_is_migrated(capture, migrate: bool) -> None:
    """A thread sleeps 100 ms; a real-time hog holds its CPU for 250 ms from then; with ``migrate`` it
    is moved to the other CPU at 170 ms while still queued. Ground truth: asleep 100 ms either way,
    then queued until the hog stops or until the move. The wake-up time comes from the scheduler's
    accounting, which a move re-stamps: the time queued before the move must still count as waiting."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("moving a queued task needs a second CPU")
    cpu, other = sorted(os.sched_getaffinity(0))[-1], sorted(os.sched_getaffinity(0))[0]
    sleeper = capture.spawn("taskset", "-c", str(cpu), "python3", "-c",
                            "import sys,time\nsys.stdin.readline()\nsys.stdin.readline()\n"
                            "print('sleeping', flush=True)\ntime.sleep(0.1)", stdout=subprocess.PIPE)
    hog = subprocess.Popen(["chrt", "-f", "10", "taskset", "-c", str(cpu), "python3", "-c",
                            "import sys,time\nprint('ready', flush=True)\nsys.stdin.readline()\n"
                            "e=time.monotonic()+0.25\nwhile time.monotonic()<e: pass"],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {other})           # this thread must not wait behind the hog to move the sleeper
    try:
        assert hog.stdout.readline().strip() == b"ready"
        sleeper.stdin.write(b"sleep\n")
        sleeper.stdin.flush()
        assert sleeper.stdout.readline().strip() == b"sleeping"
        t0 = time.monotonic()                  # the sleep starts now (give or take the pipe)
        hog.stdin.write(b"spin\n")             # real-time: it runs at once and keeps the sleeper's CPU
        hog.stdin.flush()
        if migrate:
            time.sleep(max(0.0, 0.17 - (time.monotonic() - t0)))
            os.sched_setaffinity(sleeper.pid, {other})
        assert sleeper.wait(10) == 0 and hog.wait(10) == 0
    finally:
        os.sched_setaffinity(0, mine)
        for p in (sleeper, hog):
            if p.poll() is None:
                p.kill()
                p.wait(5)
    rows = capture.rows(f"SELECT dur_ns, blocked_ns, runq_ns, reason, cpu_on FROM offcpu WHERE tgid = {sleeper.pid} "
                        "AND reason = 'sleep' AND dur_ns > 90000000 ORDER BY ts DESC LIMIT 1")
    assert rows, ("no off-CPU row for the sleep; its rows: " + repr(capture.rows(
        f"SELECT ts, dur_ns, blocked_ns, runq_ns, reason, cpu, cpu_on FROM offcpu WHERE tgid = {sleeper.pid} ORDER BY ts")))
    r = rows[0]                                # the last long one (the reads of stdin come before it)
    assert abs(int(r["blocked_ns"]) - 100_000_000) <= 5_000_000, r      # asleep: the 100 ms sleep
    assert int(r["runq_ns"]) >= 40_000_000, r                            # then queued behind the hog
    if migrate:
        assert int(r["cpu_on"]) == other, r
    else:
        assert int(r["cpu_on"]) == cpu and int(r["dur_ns"]) >= 220_000_000, r
