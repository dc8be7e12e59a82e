"""What a replay-only recorder runs besides the replay stream, and where its drain thread runs.

Both matter for the cost of recording (bench/replay.py): programs that run on every context
switch of the host, and a drain thread competing with the recorded process on its one CPU, are
paid by the recorded service and by every other process.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import is_root


@pytest.fixture
def recorder(tmp_path: Path, probes_built: None):
    if not is_root():
        pytest.skip("loading eBPF programs needs root (CI runs as root)")
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one CPU: there is no other CPU to drain on")
    from kprobe.replay.record import ReplayRecorder

    rec = ReplayRecorder(tmp_path / "session", cpu=0)
    try:
        yield rec
    finally:
        rec.stop()


def test_only_the_process_following_programs_of_the_sched_object_are_attached(recorder) -> None:
    from kprobe.replay.record import OFFCPU_PROGRAMS

    attached = {s.program for s in recorder.probes.status if s.attached}
    assert {"kp_sched_fork", "kp_sched_exec", "kp_sched_exit"} <= attached, recorder.probes.status
    assert not attached & OFFCPU_PROGRAMS
    loaded = {p.name for obj in recorder.probes.objects.values() for p in obj.programs()
              if int(p.lib.lib.bpf_program__fd(p.ptr)) >= 0}
    assert not loaded & OFFCPU_PROGRAMS  # not even loaded


def test_a_forked_child_is_still_followed(recorder) -> None:
    """The fork program keeps the watch list without the off-CPU ones: a recorded shell's child
    (its own process) is on the watch list too, so its syscalls are in the stream."""
    import numpy as np

    from kprobe.replay.capture import RSYS_FILE
    from kprobe.schemas import layouts as L

    p = recorder.start(["/bin/sh", "-c", "/bin/true; exit 3"])
    assert p.wait() == 3
    recorder.capture.flush()
    tgids = set(np.fromfile(recorder.session / RSYS_FILE, dtype=L.KP_RSYS)["tgid"].tolist())
    assert p.pid in tgids
    assert len(tgids) >= 2, tgids  # the child that ran /bin/true


def test_the_drain_thread_runs_off_the_recorded_cpu(tmp_path: Path, probes_built: None) -> None:
    """Even when the recorder's caller is pinned to the recorded CPU (as bench/replay.py is)."""
    if not is_root():
        pytest.skip("loading eBPF programs needs root (CI runs as root)")
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one CPU: there is no other CPU to drain on")
    from kprobe.replay.record import ReplayRecorder

    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})
    try:
        rec = ReplayRecorder(tmp_path / "session", cpu=0)
    finally:
        os.sched_setaffinity(0, mine)
    try:
        drain = next(t for t in threading.enumerate() if t.name == "kprobe-replay-drain")
        deadline = time.monotonic() + 5
        allowed: set[int] = {0}
        while time.monotonic() < deadline:
            allowed = os.sched_getaffinity(drain.native_id)
            if 0 not in allowed:
                break
            time.sleep(0.05)
        assert allowed and 0 not in allowed, allowed
    finally:
        rec.stop()


def test_command_that_cannot_exec_is_not_waited_for_at_its_exec(recorder) -> None:
    """The recorder holds a command at its exec to patch its vDSO (replay/vdso_exec.py). One whose
    exec fails never gets there: start returns at once with its exit status, the child is left for
    the caller to reap, and nothing stays traced."""
    t0 = time.monotonic()
    p = recorder.start(["/nonexistent/kprobe-no-such-command"])
    assert time.monotonic() - t0 < 10.0
    assert p.ended_before_exec == 127  # ReplayRecorder's child exits 127 when execvp fails
    assert p.wait() == 127
    assert recorder.capture.time_reads == {}


def test_recorded_command_is_detached_and_its_vdso_patched_at_exec(recorder) -> None:
    """After its exec the command runs untraced (a debugger could still attach), with its vDSO's
    time functions turned into syscalls: a read of its own vDSO code shows the patch."""
    from kprobe.replay.tracee import VDSO_PATCHES

    p = recorder.start(["sleep", "5"])
    try:
        status = Path(f"/proc/{p.pid}/status").read_text()
        assert "\nTracerPid:\t0\n" in status, status
        how = recorder.capture.time_reads[p.pid]
        assert how["how"] == "vdso patched to syscalls" and "__vdso_clock_gettime" in how["symbols"], how
        from kprobe.replay import tracee as T

        mem = T.Memory(p.pid)
        try:
            base, syms = T.vdso_symbols(p.pid, mem)
            code = mem.read(base + syms["__vdso_clock_gettime"].value, 8)
        finally:
            mem.close()
        assert code == b"\xb8" + VDSO_PATCHES["__vdso_clock_gettime"].to_bytes(4, "little") + b"\x0f\x05\xc3"
    finally:
        os.kill(p.pid, 9)
        p.wait()
