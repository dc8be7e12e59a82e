"""Major page faults under the default recording: memory the process needed was on disk.

A process (named by the test) maps a file whose pages were dropped from the page
cache and touches every page with readahead off: each access is a page fault that
sleeps until the page is read from disk, outside any syscall. The disk is a loop
device whose reads the process's blkio cgroup limits to 200 per second (this VM's
own disk answers from the host's cache in microseconds). The answer must be
``major_fault`` (not a disk wait in some call, not unknown), with the device's I/O in
the evidence, and the reader itself as the culprit (nothing else loads the device).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from kprobe.causal.why import render_text
from tests.causal.conftest import SystemWide, why_both_ways
from tests.causal.test_why_faults_kernel import throttled_disk  # noqa: F401  (the fixture)

pytestmark = pytest.mark.kernel

READER = ("import ctypes,mmap,os,sys,time\nctypes.CDLL(None).prctl(15, sys.argv[2].encode(), 0, 0, 0)\n"
          "size = int(sys.argv[3]) << 10\nfd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)\n"
          "os.write(fd, os.urandom(size))\n"
          "os.fsync(fd)\nos.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)\n"
          "m = mmap.mmap(fd, size, prot=mmap.PROT_READ)\nm.madvise(mmap.MADV_RANDOM)\n"
          "print('ready', flush=True)\nsys.stdin.readline()\nt0 = time.time_ns()\nc0 = time.process_time_ns()\n"
          "s = 0\nfor i in range(0, size, 4096): s += m[i]\n"
          "print(os.getpid(), t0, time.time_ns(), time.process_time_ns() - c0, flush=True)\nos.unlink(sys.argv[1])")


@pytest.fixture
def capture(system_wide: SystemWide) -> SystemWide:
    return system_wide


def test_touching_a_mapped_file_not_in_the_page_cache_is_major_faults(capture, throttled_disk):  # noqa: F811
    import os

    mnt, cg, _ = throttled_disk
    rdev = os.stat(subprocess.run(["findmnt", "-no", "SOURCE", str(mnt)], capture_output=True, text=True,
                                  check=True).stdout.strip()).st_rdev
    (cg / "blkio.throttle.read_iops_device").write_text(f"{os.major(rdev)}:{os.minor(rdev)} 200")
    p = subprocess.Popen([sys.executable, "-c", READER, str(mnt / "snapshot.bin"), "risk-snapshot", "1024"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "ready"     # written and dropped from the cache, unthrottled
    (cg / "cgroup.procs").write_text(str(p.pid))      # its reads from now on: 200 per second
    out, _ = p.communicate("go\n", timeout=120)
    pid, t0, t1, cpu = (int(x) for x in out.split())
    off = (t1 - t0) - cpu
    assert off > 0.3 * (t1 - t0), f"{off} ns off CPU of {t1 - t0}: the pages were not read from disk; proves nothing"
    assert capture.session.recorder.wait_drained(60.0), "recorder did not drain in 60 s"
    a = why_both_ways(capture.session.store, pid, t0, t1)
    print(render_text(a))
    rc = a.root_cause
    assert rc is not None and rc.kind == "major_fault", a.to_json()
    assert rc.culprit.pid == pid and rc.culprit.comm == "risk-snapshot", rc.to_json()
    io = next(e for e in rc.evidence if isinstance(e, dict) and "block_io" in e)
    assert io["block_io"] > 0, io     # the reads: credited to the reader, or to the kworker dispatching throttled bios
    assert a.breakdown.blocked_by_reason.get("uninterruptible", 0) >= 0.5 * rc.delay_ns
