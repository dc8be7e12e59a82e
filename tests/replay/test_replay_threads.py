"""Multi-threaded services recorded for real and replayed deterministically (issue 14).

The service (workloads/pool_svc.c) runs 1, 2 or 4 worker threads behind one TCP connection: under a
pthread mutex a worker reads the next message and takes a sequence number (which worker gets the
uncontended mutex never enters the kernel), then it reads the time through the vDSO, draws an id
with getrandom, appends a journal line, fsyncs and replies. Which worker served which message shows
in every reply, so a replay that interleaves the threads in any other order writes other bytes.

Ground truth is the recording: the replies the real client received and the journal the real
service wrote. Each recording is replayed ten times without the client and without the journal;
every replay must reproduce every output byte, replay every recorded syscall and end the same way.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from kprobe.schemas.syscall_table import nr
from tests.conftest import is_root

NR_ACCEPT = nr("accept")
NR_ACCEPT4 = nr("accept4")
NR_OPENAT = nr("openat")
FUTEX_WAKE = 1
WORKLOADS = Path(__file__).resolve().parents[1] / "workloads" / "replay"
MSG = 16
N_MSG = 40
REPLAYS = 10

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def pool_svc(tmp_path_factory: pytest.TempPathFactory) -> str:
    exe = tmp_path_factory.mktemp("bin") / "pool_svc"
    subprocess.run(["gcc", "-O2", "-pthread", "-o", str(exe), str(WORKLOADS / "pool_svc.c")], check=True)
    return str(exe)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _client(port: int, n: int, burst: int, replies: list[bytes]) -> None:
    """Send n fixed-size messages in bursts of ``burst``, waiting for each burst's replies."""
    for _ in range(400):
        try:
            s = socket.create_connection(("127.0.0.1", port))
            break
        except ConnectionRefusedError:
            time.sleep(0.005)
    buf = b""
    with s:
        sent = 0
        while sent < n:
            k = min(burst, n - sent)
            s.sendall(b"".join(b"pay-%012d" % (sent + i) for i in range(k)))
            sent += k
            while buf.count(b"\n") < sent:
                chunk = s.recv(4096)
                assert chunk, "service closed the connection early"
                buf += chunk
            time.sleep(0.002)
    replies.extend(buf.splitlines(keepends=True))


def record_pool(exe: str, tmp: Path, workers: int, mode: str = "shared", n: int = N_MSG) -> dict:
    """One real run of the pool service with a real client, recorded replayably."""
    return record_service(lambda port, journal: [exe, str(port), str(journal), str(n), str(workers), mode], tmp,
                          n, max(workers, 2))


def record_service(make_argv, tmp: Path, n: int, burst: int) -> dict:  # noqa: ANN001 - (port, journal) -> argv
    """One real run of a service (argv from port and journal path: prints "ready", serves ``n``
    16-byte messages from one client, prints "served n", exits 0), recorded replayably."""
    from kprobe.replay import log as rlog
    from kprobe.replay.record import ReplayRecorder

    journal = tmp / "journal.log"
    port = _free_port()
    argv = make_argv(port, journal)
    rec = ReplayRecorder(tmp / "session")
    replies: list[bytes] = []
    try:
        p = rec.start(argv, stdout_pipe=True)
        assert p.stdout is not None and p.stdout.readline() == b"ready\n"
        c = threading.Thread(target=_client, args=(port, n, burst, replies))
        c.start()
        c.join(60)
        assert not c.is_alive(), "the client did not finish"
        assert p.stdout.read() == b"served %d\n" % n
        assert p.wait() == 0
    finally:
        rec.stop()
    log = rlog.load(tmp / "session", p.pid)
    data = journal.read_bytes()
    journal.unlink()  # the replays must not need it
    return {"log": log, "argv": argv, "journal": data, "replies": replies, "dir": tmp}


@pytest.fixture(scope="module")
def pool_recording(pool_svc: str, tmp_path_factory: pytest.TempPathFactory, probes_built: None):
    """record(workers, mode): one recording per configuration, shared by this module's tests."""
    if not is_root():
        pytest.skip("attaching eBPF probes and ptrace need root (CI runs as root)")
    made: dict[tuple[int, str], dict] = {}

    def record(workers: int, mode: str = "shared") -> dict:
        if (workers, mode) not in made:
            made[workers, mode] = record_pool(pool_svc, tmp_path_factory.mktemp(f"rec{workers}{mode}"), workers, mode)
        return made[workers, mode]
    return record


def _conn_fd(log) -> int:
    return next(e.ret for e in log.events if e.nr in (NR_ACCEPT, NR_ACCEPT4) and e.ret >= 0)


def _writes(log, fd: int) -> bytes:
    """What the recorded process wrote to ``fd`` (write, send*, writev: region 0 holds the bytes)."""
    from kprobe.replay.syscall_sets import WRITES

    return b"".join(e.regions[0][: e.ret] for e in log.events if e.nr in WRITES and e.args[0] == fd and e.ret > 0)


def _served_by(journal: bytes) -> set[str]:
    return {line.split()[2].decode() for line in journal.splitlines()}


def _outcome(r) -> tuple:
    return (r.outcome, r.outputs, r.events_replayed, r.events_total, r.exit_code,
            [(q.fd, q.recorded_ms, q.replay_ms) for q in r.requests])


@pytest.mark.parametrize(("workers", "mode"), [(1, "shared"), (2, "shared"), (4, "shared"), (4, "queue")])
def test_worker_pool_replays_identically_ten_times(pool_recording, workers: int, mode: str) -> None:
    """shared: the workers take turns on the connection under a mutex; queue: the main thread reads
    and hands the messages over through a mutex + condition variable work queue."""
    from kprobe.replay.engine import ReplayEngine

    rec = pool_recording(workers, mode)
    log, argv = rec["log"], rec["argv"]
    assert log.replayable_until == len(log.events), log.problem
    assert len({e.tid for e in log.events}) == workers + 1
    # the log's bytes are the ground truth's: what the client received, what the journal holds
    conn = _conn_fd(log)
    assert _writes(log, conn) == b"".join(rec["replies"])
    journal_fd = next(e.ret for e in log.events if e.nr == NR_OPENAT and e.ret >= 0 and e.args[2] & 0o100)
    assert _writes(log, journal_fd) == rec["journal"]
    assert len(rec["journal"].splitlines()) == N_MSG
    assert log.meta["counters"]["uprobe_hits_other_processes"] == 0  # time uprobes on this process only
    assert log.meta["serialized"][str(log.tgid)]["policy"] == "rr"
    if workers > 1:  # the recording really interleaved workers
        assert len(_served_by(rec["journal"])) > 1, rec["journal"]
    results = []
    for _ in range(REPLAYS):
        t0 = time.monotonic()
        results.append(ReplayEngine(log, argv, timeout_s=60).run())
        assert time.monotonic() - t0 < 30
    identical = [r for r in results if r.outcome == "identical" and r.outputs_identical]
    first = results[0]
    assert len(identical) == REPLAYS, [(r.outcome, r.divergences[:1], r.notes[-3:]) for r in results]
    assert first.events_replayed == first.events_total
    assert first.exit_code == 0
    assert len(first.requests) == N_MSG
    assert not Path(argv[2]).exists()  # the journal was answered from the log, never written
    for r in results[1:]:
        assert _outcome(r) == _outcome(first)


def test_contended_unlocks_are_answered_in_the_tracee(pool_recording, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that unlocks a mutex a sibling waits for makes a futex wake whose turn it is (its
    next event is its own): glibc's wake ends in `syscall; ret`, which the answer table patches, so
    each such wake costs no stop. Checked against the same replay with that patch left out: the
    stops differ by those wakes (up to the few before the table exists), the outcome does not."""
    from kprobe.replay import intracee
    from kprobe.replay.engine import ReplayEngine
    from kprobe.replay.syscall_sets import FUTEX_CMD_MASK

    rec = pool_recording(4, "shared")
    log, argv = rec["log"], rec["argv"]
    clocks = {nr("clock_gettime"), nr("gettimeofday"), nr("time")}
    ordered = [e for e in ReplayEngine(log, argv)._prepared().expected if e.nr not in clocks]
    own_wakes = sum(1 for a, b in zip(ordered, ordered[1:], strict=False)
                    if a.nr == nr("futex") and a.args[1] & FUTEX_CMD_MASK == FUTEX_WAKE and a.tid == b.tid)
    assert own_wakes >= N_MSG // 2, own_wakes  # the recording really contended
    patched = ReplayEngine(log, argv, timeout_s=60).run()
    assert any("futex wake tails" in n for n in patched.notes), patched.notes
    with monkeypatch.context() as m:
        m.setattr(intracee, "_patch_futex_tails", lambda *a: 0)
        trapped = ReplayEngine(log, argv, timeout_s=60).run()
    assert not any("futex wake tails" in n for n in trapped.notes), trapped.notes
    for r in (patched, trapped):
        assert r.outcome == "identical" and r.outputs_identical, (r.outcome, r.divergences[:1], r.notes[-3:])
    assert _outcome(patched) == _outcome(trapped)
    saved = trapped.stops - patched.stops
    assert own_wakes - 3 <= saved <= own_wakes, (saved, own_wakes, trapped.stops, patched.stops)
    assert patched.tracee_answers - trapped.tracee_answers == saved


@pytest.mark.parametrize(("workers", "mode"), [(2, "shared"), (4, "queue")])
def test_what_if_slower_fsync_times_out_every_request(pool_recording, workers: int, mode: str) -> None:
    """The recorded interleaving is kept and every fsync on the journal takes 5 ms longer: each
    request's reply comes at least 5 ms later (exactly 5 ms where the worker that read it replies),
    so a 4 ms client deadline that every request met now fails for all of them, the same way in
    every replay."""
    from kprobe.replay.engine import ReplayEngine
    from kprobe.replay.inject import parse

    rec = pool_recording(workers, mode)
    log, argv = rec["log"], rec["argv"]
    glob = str(Path(argv[2]).parent / "*.log")
    deadline = 4.0
    base = ReplayEngine(log, argv, strict=False, deadline_ms=deadline).run()
    assert base.outcome == "identical" and len(base.requests) == N_MSG, (base.outcome, base.divergences[:1])
    assert [q.replay_ms for q in base.requests] == [q.recorded_ms for q in base.requests]
    slow = [ReplayEngine(log, argv, [parse(f"delay every fsync on {glob} by 5 ms")], strict=False,
                         deadline_ms=deadline).run() for _ in range(2)]
    for r in slow:
        assert len(r.requests) == N_MSG and r.exit_code == 0, (r.outcome, r.notes[-3:])
        # the times written to the journal moved with the delays: reported, and the replay went on
        assert r.divergences and r.divergences[0].kind == "bytes"
        late = [s.replay_ms - b.replay_ms for s, b in zip(r.requests, base.requests, strict=True)]
        assert min(late) >= 5.0 - 1e-6
        if mode == "shared":
            assert late == pytest.approx([5.0] * N_MSG, abs=1e-6)
    if max(q.replay_ms for q in base.requests) <= deadline:
        assert base.verdict.startswith("pass"), base.verdict
        assert slow[0].verdict.startswith(f"timeout: {N_MSG} of {N_MSG}"), slow[0].verdict
    assert [q.replay_ms for q in slow[0].requests] == [q.replay_ms for q in slow[1].requests]
    assert slow[0].verdict == slow[1].verdict


def test_spinning_hand_off_is_reported_stuck_within_seconds(tmp_path: Path, probes_built: None) -> None:
    """A thread that waits for a sibling without any syscall between cannot be ordered from syscalls:
    the replay must end in < 5 s as diverged, naming that thread, where it is and who is parked."""
    if not is_root():
        pytest.skip("attaching eBPF probes and ptrace need root (CI runs as root)")
    from kprobe.replay.engine import ReplayEngine
    from tests.replay.conftest import record_run

    exe = tmp_path / "spin_handoff"
    subprocess.run(["gcc", "-O2", "-pthread", "-o", str(exe), str(WORKLOADS / "spin_handoff.c")], check=True)
    log = record_run(tmp_path / "session", [str(exe)])
    main, setter = log.tgid, next(e.tid for e in log.events if e.tid != log.tgid)
    t0 = time.monotonic()
    r = ReplayEngine(log, [str(exe)], timeout_s=60).run()
    took = time.monotonic() - t0
    assert took < 5.0, took
    assert r.outcome == "diverged", (r.outcome, r.notes)
    d = r.divergences[0]
    assert (d.kind, d.tid) == ("stuck", main), d
    assert f"thread {main}" in d.actual and "running in user space" in d.actual
    assert f"parked: thread {setter}" in d.actual
    # the probe saw the spinning thread preempted in its user code while the setter ran: the log
    # says where the order is ambiguous, and the report points at it as the likely cause
    assert any(a.tid == main and a.syscall < 0 for a in log.ambiguous), log.ambiguous
    assert r.ambiguous_order >= 1
    assert any("likely its cause" in n for n in r.notes), r.notes


def _ten_identical(log, argv: list[str]) -> list:
    from kprobe.replay.engine import ReplayEngine

    results = [ReplayEngine(log, argv, timeout_s=60).run() for _ in range(REPLAYS)]
    bad = [(r.outcome, r.outputs_identical, r.divergences[:1], r.notes[-3:]) for r in results
           if r.outcome != "identical" or not r.outputs_identical]
    assert not bad, bad
    first = results[0]
    assert first.events_replayed == first.events_total and first.exit_code == 0
    for r in results[1:]:
        assert _outcome(r) == _outcome(first)
    return results


def test_python_threading_server_replays_identically_ten_times(tmp_path: Path, probes_built: None) -> None:
    """CPython threads behind one connection: the main thread reads, three workers take the
    messages from a queue.Queue; every hand-over goes through the GIL and the queue's condition
    variables (futexes with timeouts), which the replay orders like any other hand-over."""
    import sys

    if not is_root():
        pytest.skip("attaching eBPF probes and ptrace need root (CI runs as root)")
    svc = str(WORKLOADS / "threaded_svc.py")
    rec = record_service(lambda port, journal: [sys.executable, svc, str(port), str(journal), str(N_MSG), "3"],
                         tmp_path, N_MSG, 4)
    log, argv = rec["log"], rec["argv"]
    assert log.replayable_until == len(log.events), log.problem
    assert len({e.tid for e in log.events}) >= 4
    assert _writes(log, _conn_fd(log)) == b"".join(rec["replies"])
    assert len(_served_by(rec["journal"])) > 1, rec["journal"]
    results = _ten_identical(log, argv)
    assert len(results[0].requests) == N_MSG


def test_threads_handing_work_through_pipes_replay_identically_ten_times(tmp_path: Path, probes_built: None) -> None:
    """A producer thread writes jobs into a pipe that two workers read from (whoever reads first
    gets the job); results go back through a second pipe to the main thread, which journals them.
    The pipes are made for real and then answered from the log, so what went through them is
    compared too."""
    if not is_root():
        pytest.skip("attaching eBPF probes and ptrace need root (CI runs as root)")
    from tests.replay.conftest import record_run

    exe = tmp_path / "pipe_handoff"
    subprocess.run(["gcc", "-O2", "-pthread", "-o", str(exe), str(WORKLOADS / "pipe_handoff.c")], check=True)
    journal = tmp_path / "journal.log"
    argv = [str(exe), str(journal), str(N_MSG)]
    log = record_run(tmp_path / "session", argv)
    lines = journal.read_bytes().splitlines()
    journal.unlink()
    assert len(lines) == N_MSG
    assert len({line.split()[1] for line in lines}) == 2, lines  # both workers took jobs
    results = _ten_identical(log, argv)
    assert set(results[0].recorded_outputs) >= {"fd1", "fd3"}  # stdout, the journal ...
    assert len(results[0].recorded_outputs) >= 4                # ... and the two pipes' write ends


def _record_jdk_http(tmp: Path, policy: str, n: int = 20) -> dict:
    """The JDK HttpServer with a 4-thread pool, two keep-alive clients, recorded with ``policy``."""
    import http.client
    import os
    import shutil

    from kprobe.replay import log as rlog
    from kprobe.replay.record import ReplayRecorder

    classes = tmp / "classes"
    subprocess.run(["javac", "-d", str(classes), str(WORKLOADS / "HttpLedger.java")], check=True)
    port = _free_port()
    java = os.path.realpath(shutil.which("java") or "java")
    # no hsperfdata: its directory (shared by every JVM on the host) is listed at start-up, and a
    # replay reads it for real (a passthrough directory), where other JVMs' files come and go
    argv = [java, "-XX:-UsePerfData", "-cp", str(classes), "HttpLedger", str(port), str(tmp / "journal.log"), str(n)]
    rec = ReplayRecorder(tmp / "session", policy=policy)
    try:
        p = rec.start(argv, stdout_pipe=True)
        assert p.stdout is not None and p.stdout.readline() == b"ready\n"

        def client(k: int) -> None:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            for i in range(k, n, 2):
                c.request("POST", "/pay", body=b"pay-%06d" % i)
                assert c.getresponse().read().startswith(b"ok ")

        clients = [threading.Thread(target=client, args=(k,)) for k in range(2)]
        for c in clients:
            c.start()
        for c in clients:
            c.join(60)
        assert p.stdout.read() == b"served %d\n" % n
        assert p.wait() == 0
    finally:
        rec.stop()
    return {"log": rlog.load(tmp / "session", p.pid), "argv": argv, "journal": (tmp / "journal.log").read_bytes()}


def test_jdk_http_server_pool_replays_identically_recorded_fifo(tmp_path: Path, probes_built: None) -> None:
    """A JVM: 20 threads (GC, JIT compilers, the HTTP dispatcher, 4 pool workers), futexes
    everywhere, SecureRandom from /dev/urandom. Recorded with SCHED_FIFO (no slice, so a thread
    loading classes or compiling for long is never switched to a sibling between two syscalls),
    it replays identically ten times; the events of threads that System.exit killed are not
    waited for.

    A FIFO thread can still be switched out in its user code when the host interferes (a page
    fault that waits for I/O, a higher-priority real-time task): the probe marks that point
    ambiguous, and a replay may then diverge after it, saying so (the round-robin test below).
    Such a recording is made again, up to three times; if the host disturbed all three, each
    replay must be identical or name the ambiguous point as the likely cause."""
    import shutil

    if not is_root():
        pytest.skip("attaching eBPF probes and ptrace need root (CI runs as root)")
    if shutil.which("javac") is None:
        pytest.skip("no JDK on this machine")
    for attempt in range(3):
        (tmp_path / f"rec{attempt}").mkdir()
        rec = _record_jdk_http(tmp_path / f"rec{attempt}", "fifo")
        if not rec["log"].ambiguous:
            break
    log, argv = rec["log"], rec["argv"]
    assert log.meta["serialized"][str(log.tgid)]["policy"] == "fifo"
    assert len({e.tid for e in log.events}) >= 10
    assert len(_served_by(rec["journal"])) > 1, rec["journal"]
    from kprobe.replay.engine import ReplayEngine

    results = [ReplayEngine(log, argv, timeout_s=60).run() for _ in range(REPLAYS)]
    bad = [(r.outcome, r.divergences[:1], r.notes[-3:]) for r in results if r.outcome != "identical"
           or not r.outputs_identical]
    if log.ambiguous:  # every recording disturbed by the host: the divergence must be explained
        assert all(any("likely its cause" in n for n in r.notes) for r in results if r.outcome != "identical"), bad
        return
    assert not bad, bad
    first = results[0]
    assert first.exit_code == 0
    for r in results[1:]:
        assert (r.outputs, r.events_replayed, r.exit_code) == (first.outputs, first.events_replayed, first.exit_code)


def test_jdk_http_server_recorded_round_robin_ends_within_seconds_with_its_reason(tmp_path: Path,
                                                                                  probes_built: None) -> None:
    """Recorded with the default SCHED_RR, a JVM thread that computes for a whole 100 ms slice at
    start-up is switched to a sibling between two of its syscalls; the probe records that, and a
    replay either gets through anyway (identical) or ends within seconds naming that point as the
    likely cause of its first divergence. Never a hang."""
    import shutil

    if not is_root():
        pytest.skip("attaching eBPF probes and ptrace need root (CI runs as root)")
    if shutil.which("javac") is None:
        pytest.skip("no JDK on this machine")
    from kprobe.replay.engine import ReplayEngine

    rec = _record_jdk_http(tmp_path, "rr")
    for _ in range(3):
        t0 = time.monotonic()
        r = ReplayEngine(rec["log"], rec["argv"], timeout_s=60).run()
        assert time.monotonic() - t0 < 5.0
        if r.outcome == "identical":
            assert r.outputs_identical
        else:
            assert r.outcome == "diverged" and r.divergences, (r.outcome, r.notes)
            assert rec["log"].ambiguous and any("likely its cause" in n for n in r.notes), (r.divergences[:1], r.notes)
