"""The call a thread blocked in, read from its saved registers, with the socket behind its fd.

In the default system-wide policy no program runs on syscalls: an off-CPU row names the call
(`syscall`, `fd`) and, for a socket, its 4-tuple, from what the kernel saved when the thread
entered the call. Ground truth: a process the test starts (unwatched) blocks in recvfrom on a
TCP socket for a known time, in a pipe read, and in a sleep, and each row must say exactly that.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import Capture, is_root

pytestmark = pytest.mark.kernel

SLEEP_S = 0.120

BLOCKER = """
import os, socket, sys, time
port, sleep_s = int(sys.argv[1]), float(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port))
print(s.fileno(), s.getsockname()[1], flush=True)
t = time.monotonic_ns(); s.recv(16); took = [time.monotonic_ns() - t]   # blocked in recvfrom until the server answers
r, w = os.pipe()
print(r, flush=True)
if not os.fork():
    time.sleep(sleep_s); os.write(w, b"x"); os._exit(0)
t = time.monotonic_ns(); os.read(r, 1); took.append(time.monotonic_ns() - t)       # blocked in read on a pipe
t = time.monotonic_ns(); time.sleep(sleep_s); took.append(time.monotonic_ns() - t)  # blocked in clock_nanosleep
os.wait()
print(*took, flush=True)
"""


@pytest.fixture
def system_capture(tmp_path: Path, probes_built: None) -> Iterator[Capture]:
    if not is_root():
        pytest.skip("attaching eBPF probes needs root (CI runs as root)")
    c = Capture(tmp_path / "data", filter_on=False, detail="bounded", min_offcpu_ns=1_000_000,
                min_syscall_ns=1_000_000, sock_flush_ms=100)
    try:
        yield c
    finally:
        c.stop()


def test_blocked_call_and_socket_are_named_for_an_unwatched_process(system_capture):
    c = system_capture
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    p = subprocess.Popen([sys.executable, "-c", BLOCKER, str(port), str(SLEEP_S)], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    conn, _ = srv.accept()
    fd, cport = map(int, p.stdout.readline().split())
    time.sleep(SLEEP_S)
    conn.sendall(b"go")
    rfd = int(p.stdout.readline())
    # each call's own measure of how long it took (the pipe read is shorter than the child's sleep by the time the
    # parent took to reach it after the fork, on a loaded host tens of ms)
    took = dict(zip(("recvfrom", "read", "clock_nanosleep"), map(int, p.stdout.readline().split()), strict=True))
    assert p.wait(timeout=30) == 0
    conn.close()
    srv.close()
    c.settle()

    floor = int(0.8 * min(took.values()))
    rows = c.rows(f"SELECT syscall, fd, saddr, sport, daddr, dport, dur_ns, reason FROM offcpu "
                  f"WHERE tgid = {p.pid} AND tid = {p.pid} AND dur_ns >= {floor} ORDER BY ts")
    by_call = {r["syscall"]: r for r in rows}
    assert set(took) <= set(by_call), (took, rows)
    recv = by_call["recvfrom"]
    assert (recv["fd"], recv["saddr"], recv["sport"], recv["daddr"], recv["dport"]) == (fd, "127.0.0.1", cport, "127.0.0.1", port)
    assert recv["reason"] == "sleep"
    assert by_call["read"]["fd"] == rfd and by_call["read"]["dport"] == 0   # a pipe: no 4-tuple
    for call, ns in took.items():      # the interval is the call's time but its entry and return
        assert 0.8 * ns <= by_call[call]["dur_ns"] <= ns, (call, ns, by_call[call])
    # the rows of the blocked calls agree with the short intervals' sums kept beside them
    assert c.rows(f"SELECT count() AS n FROM offcpu WHERE tgid = {p.pid} AND syscall = '' AND reason = 'sleep' "
                  f"AND dur_ns >= {floor}")[0]["n"] == 0


LOCKER = """
import fcntl, os, sys, time
path, hold_s = sys.argv[1], float(sys.argv[2])
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
if not os.fork():                  # the holder: takes the lock, says so, keeps it hold_s
    fcntl.flock(fd, fcntl.LOCK_EX); os.write(1, b"held\\n"); time.sleep(hold_s); os._exit(0)
os.close(fd)
fd = os.open(path, os.O_RDWR)      # its own open file description: flock conflicts with the holder's
assert sys.stdin.readline() == "go\\n"
t = time.monotonic_ns(); fcntl.flock(fd, fcntl.LOCK_EX); took = time.monotonic_ns() - t
os.wait()
print(fd, took, flush=True)
sys.stdin.readline()               # a service keeps its ledger open: until told to exit
"""


def test_the_file_a_blocked_call_waited_on_is_named_with_no_hook_on_open(system_capture, tmp_path):
    """The default policy hooks no syscall: a flock on a ledger file, opened before anything watched it, is
    still a row naming the call, the fd and the file (device and inode from the kernel, the path read back
    from /proc while the process holds it, as an fd_open row; the next test: once it is gone, the inode)."""
    c = system_capture
    ledger = tmp_path / "settlement-ledger.dat"
    p = subprocess.Popen([sys.executable, "-c", LOCKER, str(ledger), str(SLEEP_S)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdin is not None and p.stdout is not None
    assert p.stdout.readline() == "held\n"
    p.stdin.write("go\n")
    p.stdin.flush()
    fd, took = map(int, p.stdout.readline().split())
    try:
        c.settle()
    finally:
        p.stdin.write("exit\n")
        p.stdin.flush()
        assert p.wait(timeout=30) == 0
    st = ledger.stat()
    rows = c.rows(f"SELECT fd, dev, ino, dur_ns FROM offcpu WHERE tgid = {p.pid} AND syscall = 'flock'")
    assert len(rows) == 1, rows
    r = rows[0]
    assert (r["fd"], r["ino"]) == (fd, st.st_ino), (r, fd, st.st_ino)
    assert (r["dev"] >> 20, r["dev"] & 0xFFFFF) == (os.major(st.st_dev), os.minor(st.st_dev)), r
    assert 0.8 * took <= r["dur_ns"] <= took, (r, took)
    named = c.rows(f"SELECT fd, path FROM fd_open WHERE tgid = {p.pid}")
    assert named == [{"fd": fd, "path": str(ledger)}], named


def test_a_file_whose_fd_is_gone_is_named_by_its_inode_never_by_another_path(tmp_path):
    """When the row is drained after the fd was closed (or reused for another file), the path read back would
    be wrong: the row names the device and inode instead, and counts it."""
    from kprobe.agent.fd_paths import FdPaths, kernel_dev
    from kprobe.schemas import layouts as L

    a, b = tmp_path / "a.dat", tmp_path / "b.dat"
    a.write_bytes(b"x")
    b.write_bytes(b"y")
    fa = os.open(a, os.O_RDONLY)
    st = os.fstat(fa)
    recs = np.zeros(2, dtype=L.KP_OFFCPU)
    recs["tgid"] = recs["tid"] = os.getpid()
    recs["sys_arg0"] = fa
    recs["file_dev"] = kernel_dev(os.major(st.st_dev), os.minor(st.st_dev))
    recs["file_ino"] = st.st_ino
    recs["off_ns"] = [1000, 2000]
    names = FdPaths()
    got = names.rows(recs)
    assert [(int(x["fd"]), x["path"].decode()) for x in got] == [(fa, str(a))]   # once per (process, fd, file)
    assert names.rows(recs).size == 0
    os.close(fa)
    fb = os.open(b, os.O_RDONLY)      # the same number, another file
    try:
        assert fb == fa and os.fstat(fb).st_ino != st.st_ino      # the rows still say file a
        stale = FdPaths().rows(recs[:1])
        assert stale["path"][0].decode() == f"inode {os.major(st.st_dev)}:{os.minor(st.st_dev)}/{st.st_ino}"
    finally:
        os.close(fb)
