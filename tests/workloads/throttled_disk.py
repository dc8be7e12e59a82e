"""A disk that is as slow on every host: the rig of the disk and memory-pressure scenarios.

An ext4 file system on a loop device whose writes a blkio cgroup (v1) limits to ``bps``: a flood's
fsync of N bytes holds the queue for N / bps seconds wherever it runs (a fast multi-queue disk would
serve a small fsync beside the flood's requests). No journal and no lazy init: no kernel thread
writes there behind the scenario's back (a jbd2 commit writes ordered data from its own, unthrottled
context; ext4lazyinit zeroes inode tables and prefetches block bitmaps after mount, and its reads
on the throttled device were once named as a disk culprit). Used by tests/causal and bench/ac_at_1.py.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

BLKIO = Path("/sys/fs/cgroup/blkio")


class NoThrottle(RuntimeError):
    """This host cannot build the rig (no cgroup v1 blkio, no free loop device)."""


def _umount(mnt: Path) -> None:
    """A killed writer may linger in D state for a moment on a throttled device: retry, then detach lazily."""
    for _ in range(60):
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode == 0:
            return
        time.sleep(0.5)
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@contextmanager
def throttled_disk(work: Path, bps: int) -> Iterator[tuple[Path, Path]]:
    """(mount point, blkio cgroup): a process written into the cgroup's ``cgroup.procs`` writes at ``bps``."""
    cg = BLKIO / f"kprobe-disk-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    if not (BLKIO / "blkio.throttle.write_bps_device").exists():
        raise NoThrottle("no cgroup v1 blkio throttling mounted at /sys/fs/cgroup/blkio")
    img, mnt = work / f"disk-{cg.name}.img", work / f"mnt-{cg.name}"
    with open(img, "wb") as f:
        f.truncate(256 << 20)      # sparse
    dev = subprocess.run(["losetup", "-f", "--show", str(img)], capture_output=True, text=True)
    if dev.returncode != 0:
        raise NoThrottle(f"no loop device: {dev.stderr.strip()}")
    loop = dev.stdout.strip()
    mounted = False
    try:
        subprocess.run(["mkfs.ext4", "-q", "-O", "^has_journal", "-E", "lazy_itable_init=0", loop], check=True,
                       capture_output=True)
        mnt.mkdir()
        subprocess.run(["mount", "-o", "noinit_itable,no_prefetch_block_bitmaps", loop, str(mnt)], check=True)
        mounted = True
        rdev = os.stat(loop).st_rdev
        cg.mkdir()
        (cg / "blkio.throttle.write_bps_device").write_text(f"{os.major(rdev)}:{os.minor(rdev)} {bps}")
        yield mnt, cg
    finally:
        if mounted:
            _umount(mnt)
        subprocess.run(["losetup", "-d", loop], check=False)
        with suppress(OSError):
            cg.rmdir()
        with suppress(OSError):
            img.unlink()
