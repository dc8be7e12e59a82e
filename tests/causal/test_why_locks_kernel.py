"""Locks beyond futex, under the default recording: flock, POSIX record locks (F_SETLKW), OFD locks, SysV semaphores.

A holder the test names takes the lock and keeps it for a known time; a victim
(never watched, also named by the test) blocks acquiring it. Nothing traces these
calls: the sched probe reads the call a thread blocked in from its registers at
switch-out, and the holder is the task that woke it (releasing a lock wakes its
waiters). The answer must be lock contention, culprit the holder, delay the
victim's own measured wait, and the lock named (the file's path, the semaphore id).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kprobe.causal.why import render_text
from tests.causal.conftest import SystemWide, why_both_ways
from tests.conftest import WORKLOADS, Capture

pytestmark = pytest.mark.kernel


@pytest.fixture
def capture(system_wide: SystemWide) -> SystemWide:
    return system_wide


def _lock_scenario(capture: Capture, tmp_path: Path, kind: str, hold_ms: int, holder_name: str,
                   victim_name: str) -> tuple[int, int, int, int, str]:
    """(victim pid, holder pid, t0, t1, lock path): the victim blocked on the holder's lock from t0 to t1."""
    path = str(tmp_path / f"{kind}.lock")
    prog = str(WORKLOADS / "causal_filelock.py")
    holder = subprocess.Popen([sys.executable, prog, "holder", kind, path, str(hold_ms), holder_name],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdin is not None
        ready, semid = holder.stdout.readline().split()
        assert ready == "ready"
        victim = subprocess.Popen([sys.executable, prog, "victim", kind, path, semid, victim_name],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert victim.stdout is not None and victim.stdin is not None
        assert victim.stdout.readline().strip() == "ready"
        victim.stdin.write("go\n")         # the victim blocks at once; the holder keeps the lock hold_ms more
        victim.stdin.flush()
        holder.stdin.write("go\n")
        holder.stdin.flush()
        out, _ = victim.communicate(timeout=30)
        assert victim.returncode == 0, out
        holder.wait(30)
    finally:
        holder.kill()
        holder.wait(5)
    vpid, t0, t1 = (int(x) for x in out.split())
    return vpid, holder.pid, t0, t1, path if kind != "sem" else semid


@pytest.mark.parametrize("kind,hold_ms,holder_name,victim_name", [
    ("flock", 400, "eod-batch", "posting-svc"),
    ("fcntl", 300, "ledger-compact", "settle-worker"),
    ("ofd", 350, "recon-job", "clearing-api"),
    ("sem", 250, "rate-limiter", "quote-feed"),
])
def test_lock_wait_names_the_holder_and_the_lock(capture, tmp_path, kind, hold_ms, holder_name, victim_name):
    vpid, hpid, t0, t1, ident = _lock_scenario(capture, tmp_path, kind, hold_ms, holder_name, victim_name)
    waited = t1 - t0
    assert waited > hold_ms * 0.5e6, f"the victim waited only {waited} ns: it never blocked; the test proves nothing"
    assert capture.session.recorder.wait_drained(60.0), "recorder did not drain in 60 s"
    a = why_both_ways(capture.session.store, vpid, t0, t1)
    print(render_text(a))
    rc = a.root_cause
    assert rc is not None and rc.kind == "lock_contention", a.to_json()
    assert rc.culprit.pid == hpid and rc.culprit.comm == holder_name, rc.to_json()
    # the lock explains the blocked part of the measured wait; the rest is the victim's run-queue wait after
    # the release (a cause of its own on a loaded host)
    assert abs(rc.delay_ns - (waited - a.breakdown.runq_ns)) <= 0.2 * waited, (rc.delay_ns, waited, a.breakdown)
    lock = next(e["lock"] for e in rc.evidence if isinstance(e, dict) and "lock" in e)
    if kind == "sem":
        assert lock == {"type": "semaphore", "semid": int(ident)}, lock
    else:
        assert lock["type"] == ("flock" if kind == "flock" else "fcntl") and lock["path"] == ident, lock
    assert a.comm == victim_name
    assert holder_name in render_text(a).splitlines()[0]


# holder: one 768 MiB buffered write (the file's inode lock is held throughout); victim: a small write to the same file
BIG_WRITE = ("import ctypes,os,sys,time\nctypes.CDLL(None).prctl(15, sys.argv[2].encode(), 0, 0, 0)\n"
             "buf = b'x' * (768 << 20)\nfd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600)\n"
             "print('ready', flush=True)\nsys.stdin.readline()\nt0 = time.time_ns()\nos.write(fd, buf)\n"
             "print(t0, time.time_ns(), flush=True)\nos.close(fd)\nos.unlink(sys.argv[1])")
SMALL_WRITE = ("import ctypes,os,sys,time\nctypes.CDLL(None).prctl(15, sys.argv[2].encode(), 0, 0, 0)\n"
               "fd = os.open(sys.argv[1], os.O_WRONLY)\nprint('ready', flush=True)\nsys.stdin.readline()\n"
               "time.sleep(0.03)\nt0 = time.time_ns()\nos.pwrite(fd, b'y' * 64, 0)\n"
               "print(os.getpid(), t0, time.time_ns(), flush=True)")


def test_write_behind_a_big_write_to_the_same_file_waits_for_its_inode_lock(capture):
    """A kernel lock: the small write sleeps (uninterruptible) on the inode lock the big write holds; no disk
    request ends its wait, the writer's release does. Not a disk wait: the lock and its holder are named."""
    path = "/var/tmp/kp-inode-lock-test.dat"
    holder = subprocess.Popen([sys.executable, "-c", BIG_WRITE, path, "bulk-loader"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "ready"
        victim = subprocess.Popen([sys.executable, "-c", SMALL_WRITE, path, "ledger-writer"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        assert victim.stdout is not None and victim.stdin is not None
        assert victim.stdout.readline().strip() == "ready"
        holder.stdin.write("go\n")
        holder.stdin.flush()
        victim.stdin.write("go\n")       # 30 ms into the big write
        victim.stdin.flush()
        out, _ = victim.communicate(timeout=60)
        h0, h1 = (int(x) for x in holder.stdout.readline().split())
        holder.wait(60)
    finally:
        holder.kill()
        holder.wait(5)
    vpid, t0, t1 = (int(x) for x in out.split())
    waited = t1 - t0
    assert waited > 50_000_000 and t1 >= h1 - 50_000_000, \
        f"the small write took {waited} ns (big write {h0}..{h1}): it did not wait for the lock; proves nothing"
    assert capture.session.recorder.wait_drained(60.0), "recorder did not drain in 60 s"
    a = why_both_ways(capture.session.store, vpid, t0, t1)
    print(render_text(a))
    first = a.chain[0]
    assert first.kind == "lock_contention" and first.culprit.pid == holder.pid, a.to_json()
    assert first.culprit.comm == "bulk-loader"
    assert abs(first.delay_ns - (waited - a.breakdown.runq_ns)) <= 0.25 * waited, (first.delay_ns, waited)
    lock = next(e["lock"] for e in first.evidence if isinstance(e, dict) and "lock" in e)
    assert lock["type"] == "inode_lock" and lock["path"] == path, lock
