"""Record real runs with the replay probe (eBPF), then replay them under ptrace with the peers absent.

Ground truth is the recording itself: the bytes the service wrote (captured by the kernel probe)
and the requests the real client sent. Replays run without the client, without the ledger file
and must reproduce every output byte; a binary that writes different bytes must be caught at the
exact syscall; injected delays must turn into the client-side verdicts they imply.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kprobe.schemas.syscall_table import nr
from tests.conftest import is_root
from tests.replay.conftest import record_run

NR_OPENAT = nr("openat")
NR_WRITE = nr("write")
NR_CLOCK_GETTIME = nr("clock_gettime")
WORKLOADS = Path(__file__).resolve().parents[1] / "workloads" / "replay"
N_REQUESTS = 6
CLIENT_THINK_S = 0.45  # the client sends its next payment this long after a reply

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def binaries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("bin")
    built = {}
    for name in ("ledger_svc", "two_threads"):
        exe = out / name
        subprocess.run(["gcc", "-O2", "-pthread", "-o", str(exe), str(WORKLOADS / f"{name}.c")], check=True)
        built[name] = str(exe)
    return built


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ledger_recording(binaries: dict[str, str], tmp_path_factory: pytest.TempPathFactory, probes_built: None):
    """One real run of the ledger service with a real client, recorded replayably."""
    if not is_root():
        pytest.skip("attaching eBPF probes and ptrace need root (CI runs as root)")
    from kprobe.replay import log as rlog
    from kprobe.replay.record import ReplayRecorder

    tmp = tmp_path_factory.mktemp("rec")
    ledger = tmp / "ledger.log"
    port = _free_port()
    argv = [binaries["ledger_svc"], str(port), str(ledger), str(N_REQUESTS)]
    rec = ReplayRecorder(tmp / "replay" / "session")
    try:
        p = rec.start(argv, stdout_pipe=True)
        assert p.stdout is not None and p.stdout.readline() == b"ready\n"
        replies = []
        with socket.create_connection(("127.0.0.1", port)) as s:
            for i in range(N_REQUESTS):
                s.sendall(b"payment-%d\n" % i)
                replies.append(s.recv(200))
                time.sleep(CLIENT_THINK_S)
        assert p.wait() == 0
    finally:
        rec.stop()
    log = rlog.load(tmp / "replay" / "session", p.pid)
    ledger_bytes = ledger.read_bytes()
    ledger.unlink()  # the replay must not need it
    return {"log": log, "argv": argv, "ledger": ledger_bytes, "replies": replies, "dir": tmp}


def _ledger_writes(log) -> bytes:
    ledger_fd = next(e.ret for e in log.events if e.nr == NR_OPENAT and e.ret >= 0 and e.args[2] & 0o100)
    return b"".join(e.regions[0][: e.ret] for e in log.events if e.nr == NR_WRITE and e.args[0] == ledger_fd)


def test_recorded_command_gets_only_stdin_stdout_stderr(tmp_path: Path, probes_built: None) -> None:
    """A descriptor the recording process holds without close-on-exec (libraries leave such) must
    not reach the recorded command: its replay starts elsewhere without it, and every fd number
    would shift (a clean-clone CI run once diverged at the first open for this reason)."""
    if not is_root():
        pytest.skip("attaching eBPF probes needs root (CI runs as root)")
    from kprobe.replay.record import ReplayRecorder

    leaked = os.open(os.devnull, os.O_RDONLY)
    os.set_inheritable(leaked, True)
    rec = ReplayRecorder(tmp_path / "session")
    try:
        p = rec.start(["ls", "-1", "/proc/self/fd"], stdout_pipe=True)
        listed = p.stdout.read().split() if p.stdout else []
        assert p.wait() == 0
    finally:
        os.close(leaked)
        rec.stop()
    assert sorted(listed) == [b"0", b"1", b"2", b"3"]  # 3: the directory ls is reading


def test_log_holds_inputs_outputs_and_vdso_time(ledger_recording) -> None:
    log = ledger_recording["log"]
    assert log.replayable_until == len(log.events), log.problem
    names = [e.nr for e in log.events]
    assert names.count(nr("getrandom")) >= N_REQUESTS  # glibc may draw once at start-up too
    # natively clock_gettime never enters the kernel; the recorder patched the vDSO at exec, so
    # each read was a syscall, recorded with the value it returned
    clock_reads = [e for e in log.events if e.nr == NR_CLOCK_GETTIME]
    assert len(clock_reads) == N_REQUESTS and not any(e.vdso for e in clock_reads)
    assert all(len(e.regions[0]) == 16 for e in clock_reads)
    assert log.meta["time_reads"][str(log.tgid)]["how"] == "vdso patched to syscalls", log.meta["time_reads"]
    assert _ledger_writes(log) == ledger_recording["ledger"]  # the captured bytes are the file's bytes


def test_replay_identical_ten_times_with_peers_absent(ledger_recording) -> None:
    from kprobe.replay.engine import ReplayEngine

    log, argv = ledger_recording["log"], ledger_recording["argv"]
    results = [ReplayEngine(log, argv).run() for _ in range(10)]
    first = results[0]
    assert first.outcome == "identical", (first.divergences, first.notes)
    assert first.divergences == []
    assert first.outputs_identical, (first.outputs, first.recorded_outputs)
    assert first.events_replayed == first.events_total
    assert first.exit_code == 0
    assert not Path(argv[2]).exists()  # the ledger was answered from the log, never written
    assert len(first.requests) == N_REQUESTS
    for r in results[1:]:
        assert (r.outcome, r.outputs, r.events_replayed) == (first.outcome, first.outputs, first.events_replayed)
        assert [q.replay_ms for q in r.requests] == [q.replay_ms for q in first.requests]


def test_different_bytes_reported_at_first_divergent_syscall(ledger_recording, binaries) -> None:
    from kprobe.replay.engine import ReplayEngine

    log, argv = ledger_recording["log"], ledger_recording["argv"]
    res = ReplayEngine(log, argv[:4] + ["1"]).run()  # variant 1 tags the middle ledger line
    assert res.outcome == "diverged"
    d = res.divergences[0]
    ledger_fd = next(e.ret for e in log.events if e.nr == NR_OPENAT and e.ret >= 0 and e.args[2] & 0o100)
    ledger_writes = [e for e in log.events if e.nr == NR_WRITE and e.args[0] == ledger_fd]
    assert d.kind == "bytes"
    assert d.index == ledger_writes[N_REQUESTS // 2].index
    assert "FIXED" in d.actual and "FIXED" not in d.expected


def _summary(r) -> tuple:
    # a clock read answered inside the tracee (replay/intracee.py) is a trapped syscall without a stop
    return (r.outcome, r.outputs, r.recorded_outputs, r.events_replayed, r.events_total,
            r.answered_syscalls, r.exit_code,
            [(q.fd, q.recorded_ms, q.replay_ms) for q in r.requests], r.replay_span_ms,
            r.synthesized_clock_reads, [(d.index, d.kind, d.expected, d.actual) for d in r.divergences])


_FRESH = """
import pickle, signal, sys, threading
from pathlib import Path
from kprobe.replay import log as rlog
from kprobe.replay.engine import ReplayEngine
session, tgid, other, argv = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4:]
release, ready = threading.Event(), threading.Event()
def idle():
    if other == "blocking":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    ready.set()
    release.wait()
if other != "none":
    threading.Thread(target=idle, daemon=True).start()
    ready.wait(5)
r = ReplayEngine(rlog.load(session, tgid), argv).run()
release.set()
sys.stdout.buffer.write(pickle.dumps(r))
"""


def _replay_in_fresh_process(session: Path, tgid: int, argv: list[str], other: str = "none"):
    """ReplayEngine(log, argv).run() in a new Python process (the tracer's own threads decide between
    notifications and ptrace stops, and this pytest process may have any from earlier tests), with no
    other thread, one that can take SIGCHLD ("plain") or one that blocks it ("blocking")."""
    out = subprocess.run([sys.executable, "-c", _FRESH, str(session), str(tgid), other, *argv], capture_output=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr.decode()[-3000:]
    return pickle.loads(out.stdout)


def test_compiled_hot_path_answers_exactly_like_the_python_engine(ledger_recording) -> None:
    """The C loop (replay/fastpath.c) answers reads, clock reads, getrandom, fsync and compares the
    replies, as seccomp notifications or in one ptrace stop each; every observable result must
    equal the Python engine's."""
    from kprobe.replay import fastpath
    from kprobe.replay.engine import ReplayEngine

    assert fastpath.LIBRARY.exists(), "the replay hot path is not built: run `make -C replay` (setup.sh does)"
    log, argv = ledger_recording["log"], ledger_recording["argv"]
    # notifications need a tracer without other threads that could take SIGCHLD; this pytest process may
    # have some from earlier tests (chDB, gRPC), so that variant runs in a fresh process, as `kprobe replay` does
    fast = _replay_in_fresh_process(ledger_recording["dir"] / "replay" / "session", log.tgid, argv)
    fast_ptrace = ReplayEngine(log, argv, notify=False).run()  # the C loop on ptrace stops only
    slow = ReplayEngine(log, argv, fast=False).run()
    assert slow.fast_events == 0
    # per request: read, clock_gettime, getrandom, write, fsync, write: all six in C
    assert fast.fast_events >= 6 * N_REQUESTS and fast_ptrace.fast_events >= 6 * N_REQUESTS, (
        fast.outcome, fast.divergences[:2], fast_ptrace.outcome, fast_ptrace.divergences[:2], fast.notes)
    assert fast.outcome == "identical" and fast.outputs_identical, (fast.divergences, fast.notes)
    assert _summary(fast) == _summary(slow) == _summary(fast_ptrace)
    assert (fast.hot_syscalls, fast_ptrace.hot_syscalls, slow.hot_syscalls) == ("seccomp-notify", "ptrace", "ptrace")
    # another thread of the tracer could take the SIGCHLD of a ptrace stop: notifications are then not
    # used (each stop could wait out a poll slice), the result stays the same
    session = ledger_recording["dir"] / "replay" / "session"
    threaded = _replay_in_fresh_process(session, log.tgid, argv, other="plain")
    assert threaded.hot_syscalls == "ptrace" and threaded.fast_events == fast.fast_events
    assert _summary(threaded) == _summary(slow)
    # a thread that blocks SIGCHLD (as librdkafka's threads block every signal) cannot take it
    masked = _replay_in_fresh_process(session, log.tgid, argv, other="blocking")
    assert masked.hot_syscalls == "seccomp-notify" and _summary(masked) == _summary(slow)
    # the steady state (six events per request) is answered inside the tracee, without stops
    # (replay/intracee.py): the libc wrappers' fast paths and the vDSO clock call the table's stubs
    assert fast.tracee_answers >= 6 * (N_REQUESTS - 1) and fast_ptrace.tracee_answers >= 6 * (N_REQUESTS - 1)
    trapped = ReplayEngine(log, argv, in_tracee=False).run()  # every one of them trapped, answered in C
    assert trapped.tracee_answers == 0 and _summary(trapped) == _summary(slow)
    # outputs differ mid-run (1: other bytes; 2: the reply before the ledger write, so another fd): the
    # stub declines, the real syscall traps, the C loop hands it back, Python reports the same divergence
    for variant in ("1", "2"):
        slow_div = ReplayEngine(log, argv[:4] + [variant], fast=False).run()
        for kw in ({"notify": True}, {"notify": False}, {"in_tracee": False}):
            fast_div = ReplayEngine(log, argv[:4] + [variant], **kw).run()
            assert fast_div.outcome == "diverged" and fast_div.fast_events > 0, (variant, kw)
            assert _summary(fast_div)[-1] == _summary(slow_div)[-1], (variant, kw)
            assert fast_div.events_replayed == slow_div.events_replayed, (variant, kw)


def test_injected_ledger_delay_gives_client_timeout_and_fix_passes(ledger_recording) -> None:
    from kprobe.replay.engine import ReplayEngine
    from kprobe.replay.inject import parse

    log, argv = ledger_recording["log"], ledger_recording["argv"]
    ledger_fd = next(e.ret for e in log.events if e.nr == NR_OPENAT and e.ret >= 0 and e.args[2] & 0o100)
    deadline = 300.0
    base = ReplayEngine(log, argv, strict=False, deadline_ms=deadline).run()
    assert base.verdict.startswith("pass"), base.verdict
    spec = f"delay the 3rd write to fd {ledger_fd} by 388 ms"
    slow = [ReplayEngine(log, argv, [parse(spec)], strict=False, deadline_ms=deadline).run() for _ in range(2)]
    for r in slow:
        assert r.verdict.startswith("timeout: 1 of"), r.verdict
        timed = [q for q in r.requests if q.timed_out]
        assert len(timed) == 1 and timed[0].replay_ms >= 388.0
    assert [q.replay_ms for q in slow[0].requests] == [q.replay_ms for q in slow[1].requests]
    # the fix replies before the ledger write: same log, same injected delay, no timeout
    fixed = ReplayEngine(log, argv[:4] + ["2"], [parse(spec)], strict=False, deadline_ms=deadline).run()
    assert fixed.verdict.startswith("pass"), (fixed.verdict, fixed.requests, fixed.notes)
    assert fixed.divergences  # the order changed, and replay says so
    assert fixed.divergences[0].kind == "sequence"


def test_two_threads_replay_identical(binaries, tmp_path: Path, probes_built: None) -> None:
    if not is_root():
        pytest.skip("attaching eBPF probes and ptrace need root (CI runs as root)")
    from kprobe.replay.engine import ReplayEngine

    out = tmp_path / "out.log"
    argv = [binaries["two_threads"], str(out)]
    log = record_run(tmp_path / "session", argv)
    assert len({e.tid for e in log.events}) == 2
    out.unlink()
    results = [ReplayEngine(log, argv).run() for _ in range(10)]
    for r in results:
        assert r.outcome == "identical", (r.divergences, r.notes)
        assert r.outputs_identical
    assert len({tuple(sorted(r.outputs.items())) for r in results}) == 1
    slow = ReplayEngine(log, argv, fast=False).run()  # the Python engine alone agrees
    assert (slow.outcome, slow.outputs, slow.events_replayed) == (results[0].outcome, results[0].outputs,
                                                                  results[0].events_replayed)
    assert os.path.exists(out) is False


def test_cli_replay_reports_outcome_and_verdict(ledger_recording) -> None:
    import json
    import sys

    log, argv, data = ledger_recording["log"], ledger_recording["argv"], ledger_recording["dir"]
    base = [sys.executable, "-m", "kprobe", "replay", "--data", str(data), "--incident", f"session:{log.tgid}"]
    ok = subprocess.run(base + ["--", *argv], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "outcome: identical" in ok.stdout and "byte-identical" in ok.stdout
    ledger_fd = next(e.ret for e in log.events if e.nr == NR_OPENAT and e.ret >= 0 and e.args[2] & 0o100)
    slow = subprocess.run(base + ["--deadline-ms", "300", "--inject", f"delay the 2nd write to fd {ledger_fd} by 388 ms",
                                  "--json", "--", *argv], capture_output=True, text=True, timeout=120)
    out = json.loads(slow.stdout)
    assert out["verdict"].startswith("timeout: 1 of"), out["verdict"]
    assert [q["timed_out"] for q in out["requests"]].index(True) == 1
    bad = subprocess.run(base + ["--inject", "delay something odd", "--", *argv], capture_output=True, text=True)
    assert bad.returncode == 2 and "cannot parse injection" in bad.stderr


def test_kprobe_run_replayable_then_replay(tmp_path: Path, binaries, probes_built: None) -> None:
    import sys

    if not is_root():
        pytest.skip("attaching eBPF probes and ptrace need root (CI runs as root)")
    out = tmp_path / "out.log"
    argv = [binaries["two_threads"], str(out)]
    run = subprocess.run([sys.executable, "-m", "kprobe", "run", "--replayable", "--data", str(tmp_path / "d"),
                          "--", *argv], capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr
    sessions = list((tmp_path / "d" / "replay").iterdir())
    assert len(sessions) == 1
    from kprobe.replay import log as rlog

    pid = rlog.tgids(sessions[0])[-1]
    st = subprocess.run([sys.executable, "-m", "kprobe", "stats", "--data", str(tmp_path / "d")],
                        capture_output=True, text=True, timeout=120)
    assert st.returncode == 0, st.stderr
    line = next(x for x in st.stdout.splitlines() if x.startswith("replayable capture"))
    meta = json.loads((sessions[0] / "meta.json").read_text())
    assert sessions[0].name in line and "(stopped)" in line, line
    assert f"syscall records {meta['written']['rsys']}," in line and meta["written"]["rsys"] > 0, line
    assert "time-probe hits in processes not recorded 0" in line, line      # no uprobe on any other process
    # its vDSO was patched at its exec (the forking thread held it there): clock reads are syscalls
    assert meta["time_reads"][str(pid)]["how"] == "vdso patched to syscalls", meta["time_reads"]
    out.unlink()
    rep = subprocess.run([sys.executable, "-m", "kprobe", "replay", "--data", str(tmp_path / "d"), "--pid", str(pid),
                          "--", *argv], capture_output=True, text=True, timeout=120)
    assert rep.returncode == 0, rep.stdout + rep.stderr
    assert "outcome: identical" in rep.stdout


def test_every_fsync_on_path_glob_delays_each_request(ledger_recording) -> None:
    from kprobe.replay.engine import ReplayEngine
    from kprobe.replay.inject import parse

    log, argv = ledger_recording["log"], ledger_recording["argv"]
    glob = str(Path(argv[2]).parent / "*.log")
    base = ReplayEngine(log, argv, strict=False).run()
    slow = ReplayEngine(log, argv, [parse(f"delay every fsync on {glob} by 50 ms")], strict=False).run()
    assert len(slow.requests) == len(base.requests) == N_REQUESTS
    for b, s in zip(base.requests, slow.requests, strict=True):
        assert s.replay_ms - b.replay_ms == pytest.approx(50.0, abs=0.01)
    other = ReplayEngine(log, argv, [parse("delay every fsync on /elsewhere/* by 50 ms")], strict=False).run()
    assert [q.replay_ms for q in other.requests] == [q.replay_ms for q in base.requests]


def test_process_not_recorded_from_exec_is_refused(ledger_recording, tmp_path: Path) -> None:
    import numpy as np

    from kprobe.replay import log as rlog
    from kprobe.replay.capture import RSYS_FILE

    src = ledger_recording["dir"] / "replay" / "session"
    rsys = np.fromfile(src / RSYS_FILE, dtype=rlog.L.KP_RSYS)
    (tmp_path / RSYS_FILE).write_bytes(rsys[~np.isin(rsys["nr"], (59, 322))].tobytes())
    (tmp_path / "rdata.bin").write_bytes(b"")
    with pytest.raises(rlog.LogError, match="not recorded from exec"):
        rlog.load(tmp_path, ledger_recording["log"].tgid)


def test_forking_binary_is_reported_unsupported(ledger_recording, tmp_path: Path) -> None:
    from kprobe.replay.engine import ReplayEngine

    src = tmp_path / "forker.c"
    src.write_text("#include <unistd.h>\n#include <sys/wait.h>\nint main(void){if(fork()==0)_exit(0);"
                   "wait(0);return 0;}\n")
    subprocess.run(["gcc", "-o", str(tmp_path / "forker"), str(src)], check=True)
    # what-if mode keeps going past the (expected) divergences until the fork itself
    res = ReplayEngine(ledger_recording["log"], [str(tmp_path / "forker")], strict=False).run()
    assert res.outcome == "unsupported", (res.outcome, res.notes)
    assert any("forks" in n for n in res.notes)
