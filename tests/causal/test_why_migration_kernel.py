"""A thread moved off its CPU (its affinity changed) and queued on the new one, under the default recording.

An order router spins on CPU 0 (a scheduling group above the host's other work). A risk
batch job, a scheduling group of higher priority still, spins on CPU 1. Half a second into the router's window the test changes the
router's affinity to CPU 1 (what an operator's `taskset`, a cpuset shrink or a
container's CPU pinning does): the kernel's migration stopper moves it, and from then
on it waits on CPU 1 behind the batch job. The answer must be ``cpu_migration`` from
CPU 0 to CPU 1 with the batch job as culprit; without the move, the kind is not named.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from kprobe.causal.why import render_text
from tests.causal.conftest import SystemWide, needs_two_cpus, why_both_ways
from tests.conftest import Capture

pytestmark = pytest.mark.kernel

# pinned to CPU argv[3], spinning argv[1] seconds after "go", named argv[2], in its own scheduling group (autogroup)
# at nice -10: above this shared host's other work, below the batch job; prints "pid t0 t1 cpu_ns"
SPIN = ("import ctypes,os,sys,time\nctypes.CDLL(None).prctl(15, sys.argv[2].encode(), 0, 0, 0)\n"
        "os.sched_setaffinity(0, {int(sys.argv[3])})\n"
        "try: open('/proc/self/autogroup','w').write('-10')\nexcept OSError: pass\n"
        "sys.stdin.readline()\n"
        "t0=time.time_ns();e=time.monotonic()+float(sys.argv[1])\nwhile time.monotonic()<e: pass\n"
        "print(os.getpid(), t0, time.time_ns(), time.process_time_ns(), flush=True)")
# the batch job: on CPU argv[2] until killed, its own session's scheduling group (autogroup) at nice argv[1]
HOG = ("import ctypes,os,sys,time\nctypes.CDLL(None).prctl(15, b'risk-batch', 0, 0, 0)\n"
       "os.sched_setaffinity(0, {int(sys.argv[2])})\n"
       "try: open('/proc/self/autogroup','w').write(sys.argv[1])\nexcept OSError: pass\n"
       "while True: pass\n")


@pytest.fixture
def capture(system_wide: SystemWide) -> SystemWide:
    needs_two_cpus("the router is moved from one to the other")
    return system_wide


def _router(move_after: float | None) -> tuple[int, int, int, int]:
    """The router's 2 s window; moved to CPU 1 ``move_after`` seconds in (None: never)."""
    p = subprocess.Popen([sys.executable, "-c", SPIN, "2.0", "order-router", "0"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, start_new_session=True)
    time.sleep(0.3)
    assert p.stdin is not None
    p.stdin.write("go\n")
    p.stdin.flush()
    if move_after is not None:
        time.sleep(move_after)
        os.sched_setaffinity(p.pid, {1})
    out, _ = p.communicate(timeout=60)
    pid, t0, t1, cpu = (int(x) for x in out.split())
    return pid, t0, t1, cpu


def _analyse(capture: Capture, pid: int, t0: int, t1: int):
    time.sleep(0.5)
    assert capture.session.recorder.wait_drained(60.0), "recorder did not drain in 60 s"
    a = why_both_ways(capture.session.store, pid, t0, t1)
    print(render_text(a))
    return a


def test_a_thread_moved_onto_a_busy_cpu_is_named_cpu_migration_with_the_cpus_and_the_holder(capture):
    hog = subprocess.Popen([sys.executable, "-c", HOG, "-20", "1"], start_new_session=True)
    try:
        time.sleep(0.3)
        pid, t0, t1, _ = _router(None)
        a = _analyse(capture, pid, t0, t1)
        assert all(c.kind != "cpu_migration" for c in a.causes), a.to_json()

        pid, t0, t1, cpu = _router(0.5)
    finally:
        hog.kill()
        hog.wait(5)
    wall = t1 - t0
    assert wall - cpu > 0.4 * wall, f"the router ran {cpu} ns of {wall}: it did not queue on CPU 1, no test"
    a = _analyse(capture, pid, t0, t1)
    rc = a.root_cause
    assert rc is not None and rc.kind == "cpu_migration", a.to_json()
    assert rc.culprit.pid == hog.pid and rc.culprit.comm == "risk-batch", rc.to_json()
    ev = rc.evidence[0]
    # moved by the stopper if it was running when its affinity changed, directly if it was queued
    assert ev["from_cpu"] == 0 and ev["to_cpu"] == 1, ev
    assert rc.cpu == 1 and ev["moves"] == 1
    # the move came half a second in: it is dated there, and explains most of what the router lost afterwards
    assert abs(ev["moved_at"][0] - (t0 + 500_000_000)) < 300_000_000, (ev["moved_at"], t0)
    assert 0.5 * (wall - cpu) <= rc.delay_ns <= 1.05 * (wall - cpu), (rc.delay_ns, wall - cpu)
    assert "moved from CPU 0 to CPU 1" in render_text(a).splitlines()[0]
