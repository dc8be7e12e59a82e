"""CPU quota throttling, under the default recording: the cgroup's quota is the root cause, not a neighbour.

A CPU-bound process in a cgroup whose quota is 15 % of a CPU (v1 cpu.cfs_quota_us or v2
cpu.max, whichever this host has) spends most of its wall time runnable but off-CPU;
the scheduler shows each of those switches as a preemption by whoever ran next. The
answer must be ``cpu_throttling`` with the cgroup, its quota and the fix named, and
the culprit the member that used the quota (the victim itself when it is alone; the
other member when a batch job shares the cgroup and spends most of it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kprobe.agent.cgroup_cpu import Hierarchy
from kprobe.causal.why import render_text
from tests.causal.conftest import SystemWide, why_both_ways
from tests.conftest import Capture, is_root

pytestmark = pytest.mark.kernel

# spins for argv[1] seconds after "go", named argv[2]; prints "pid t0 t1 cpu_ns"
SPIN = ("import ctypes,os,sys,time\nctypes.CDLL(None).prctl(15, sys.argv[2].encode(), 0, 0, 0)\nsys.stdin.readline()\n"
        "t0=time.time_ns();e=time.monotonic()+float(sys.argv[1])\nwhile time.monotonic()<e: pass\n"
        "print(os.getpid(), t0, time.time_ns(), time.process_time_ns(), flush=True)")


@pytest.fixture
def capture(system_wide: SystemWide) -> SystemWide:
    return system_wide


@pytest.fixture
def quota_cgroup() -> Iterator[tuple[Path, str]]:
    """A fresh cgroup at 15 % of one CPU: (its directory, its path as the recorder names it)."""
    h = Hierarchy.find()
    if h is None or not is_root():
        pytest.skip("no cpu controller hierarchy (v1 cpu or v2 with the cpu controller) to set a quota in, or not root")
    d = h.root / f"kp-throttle-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    try:
        if h.v2:
            (d / "cpu.max").write_text("15000 100000")
        else:
            (d / "cpu.cfs_period_us").write_text("100000")
            (d / "cpu.cfs_quota_us").write_text("15000")
        yield d, "/" + d.name
    finally:
        for _ in range(50):
            try:
                d.rmdir()
                break
            except OSError:       # members still exiting
                time.sleep(0.1)


def _spinner(cg: Path, seconds: float, name: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", SPIN, str(seconds), name], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    (cg / "cgroup.procs").write_text(str(p.pid))
    return p


def _analyse(capture: Capture, pid: int, t0: int, t1: int):
    time.sleep(0.8)      # the cgroup's counters are sampled every 250 ms: one sample after the window
    assert capture.session.recorder.wait_drained(60.0), "recorder did not drain in 60 s"
    a = why_both_ways(capture.session.store, pid, t0, t1)
    print(render_text(a))
    return a


def _throttled_ns(cg: Path) -> int:
    """The cgroup's own count of throttled time (v1 throttled_time ns, v2 throttled_usec): the ground truth."""
    st = dict(line.split() for line in (cg / "cpu.stat").read_text().splitlines())
    return int(st["throttled_time"]) if "throttled_time" in st else int(st["throttled_usec"]) * 1000


def test_cpu_bound_process_at_15_percent_quota_is_throttled_by_its_cgroup(capture, quota_cgroup):
    cg, rel = quota_cgroup
    p = _spinner(cg, 1.5, "risk-calc")
    out, _ = p.communicate("go\n", timeout=60)
    truth = _throttled_ns(cg)      # the only member, spinning from start to exit
    pid, t0, t1, cpu = (int(x) for x in out.split())
    off = (t1 - t0) - cpu
    assert off > 0.6 * (t1 - t0), f"on CPU {cpu} ns of {t1 - t0}: not throttled, the test proves nothing"
    assert truth > 0.25 * (t1 - t0), f"throttled only {truth} ns: the quota did not bite, the test proves nothing"
    a = _analyse(capture, pid, t0, t1)
    rc = a.root_cause
    assert rc is not None and rc.kind == "cpu_throttling", a.to_json()
    assert rc.culprit.pid == pid and rc.culprit.comm == "risk-calc", rc.to_json()
    # the window starts after the spinner's start-up (a few periods): most, not all, of the cgroup's count
    assert 0.6 * min(truth, off) <= rc.delay_ns <= 1.05 * min(truth, off), (rc.delay_ns, truth, off)
    ev = rc.evidence[0]
    assert ev["cgroup"] == rel and ev["quota_us"] == 15000 and ev["period_us"] == 100000, ev
    assert ev["nr_throttled"] >= 5 and "raise the CPU quota" in ev["fix"], ev
    assert a.causes[0] is rc and all(c.delay_ns < rc.delay_ns for c in a.causes[1:])
    assert "throttled" in render_text(a).splitlines()[0] and rel in render_text(a).splitlines()[0]


def test_quota_spent_by_a_batch_job_in_the_same_cgroup_names_the_batch_job(capture, quota_cgroup):
    """Two members: a 4-thread batch job spends most of the quota, the victim gets throttled with it."""
    cg, rel = quota_cgroup
    hog = subprocess.Popen([sys.executable, "-c",
                            "import ctypes,threading,time,sys\nctypes.CDLL(None).prctl(15, b'nightly-etl', 0, 0, 0)\n"
                            "def spin():\n  e=time.monotonic()+6\n  while time.monotonic()<e: sum(range(1000))\n"
                            "ts=[threading.Thread(target=spin) for _ in range(4)]\n[t.start() for t in ts]\n"
                            "[t.join() for t in ts]"], stdin=subprocess.DEVNULL)
    try:
        (cg / "cgroup.procs").write_text(str(hog.pid))
        time.sleep(0.5)
        p = _spinner(cg, 1.0, "fx-pricer")
        out, _ = p.communicate("go\n", timeout=60)
    finally:
        hog.kill()
        hog.wait(5)
    pid, t0, t1, cpu = (int(x) for x in out.split())
    assert (t1 - t0) - cpu > 0.6 * (t1 - t0), "the victim was not throttled, the test proves nothing"
    a = _analyse(capture, pid, t0, t1)
    rc = a.root_cause
    assert rc is not None and rc.kind == "cpu_throttling", a.to_json()
    assert rc.culprit.pid == hog.pid and rc.culprit.comm == "nightly-etl", rc.to_json()
    assert rc.evidence[0]["cgroup"] == rel
    assert os.path.basename(rel) in render_text(a)
