"""fd_open rows for the files threads blocked on, from their off-CPU rows.

Why: the bounded policy attaches no hook on open or close. Enabling any syscall tracepoint sends
every syscall of every task on the host through the kernel's slow entry and exit path, whatever
program is attached (bench/overhead.py --modes floor,floor-calls: `perf bench sched pipe` lost
another ~6 % with empty programs on the per-call tracepoints). Yet `why` names the file a sync,
a read or a lock waited on. The sched probe puts the file's device, inode and path (walked from
its dentry when the row is emitted: a waiter that exits right after its lock is still named) on
the row of every blocked file call; here they become fd_open rows, the rows an open hook writes,
so the causal engine's path lookup does not change. Once per (process, fd, file), and again after
``refresh_ns`` so retention never leaves a file held for days nameless. When the kernel gave no
path (a walk cut short), the descriptor is read back from /proc/PID/fd, kept only if the inode
still matches; failing that the row names the inode (``inode 8:1/1234``): never a wrong path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kprobe.schemas import layouts as L

KERNEL_MINOR_BITS = 20     # the kernel's dev_t: major << 20 | minor (userspace's st_dev encodes differently)


def kernel_dev(major: int, minor: int) -> int:
    return (major << KERNEL_MINOR_BITS) | minor


def inode_name(dev: int, ino: int) -> str:
    """How a file is named when its path cannot be read back: device and inode, stable and unambiguous."""
    return f"inode {dev >> KERNEL_MINOR_BITS}:{dev & ((1 << KERNEL_MINOR_BITS) - 1)}/{ino}"


@dataclass
class FdPaths:
    """(process, fd) -> the file last named for it; bounded, oldest forgotten first."""

    proc: Path = Path("/proc")
    refresh_ns: int = 300_000_000_000
    max_entries: int = 65536
    resolved: int = 0       # rows written with a path (the kernel's, or read back from /proc)
    unresolved: int = 0     # rows written with the inode only (no path from the kernel, fd gone from /proc)
    _named: dict[tuple[int, int], tuple[int, int, int]] = field(default_factory=dict)

    def rows(self, offcpu: np.ndarray) -> np.ndarray:
        """fd_open records for the files behind ``offcpu``'s blocked calls not named lately."""
        files = offcpu[offcpu["file_ino"] != 0]
        if not files.size:
            return np.zeros(0, dtype=L.KP_FD_OPEN)
        # one Python step per distinct (process, fd, file) of the drained piece, not per row: a database
        # syncing its log blocks on the same file hundreds of times a second
        key = np.stack([files["tgid"].astype(np.uint64), files["sys_arg0"], files["file_dev"].astype(np.uint64),
                        files["file_ino"]], axis=1)
        _, first = np.unique(key, axis=0, return_index=True)
        out: list[tuple[int, int, int, int, str]] = []
        for r in files[np.sort(first)]:
            tgid, fd, dev, ino, ts = int(r["tgid"]), int(r["sys_arg0"]), int(r["file_dev"]), int(r["file_ino"]), \
                int(r["off_ns"])
            had = self._named.get((tgid, fd))
            if had is not None and had[:2] == (dev, ino) and ts - had[2] < self.refresh_ns:
                continue
            path = r["file_path"].decode(errors="replace")
            if path:
                self.resolved += 1
            else:
                path = self._path(tgid, fd, dev, ino)
            out.append((ts, tgid, int(r["tid"]), fd, path))
            self._named.pop((tgid, fd), None)      # re-inserted last: the dict's order is the age
            self._named[(tgid, fd)] = (dev, ino, ts)
        while len(self._named) > self.max_entries:
            del self._named[next(iter(self._named))]
        recs = np.zeros(len(out), dtype=L.KP_FD_OPEN)
        for i, (ts, tgid, tid, fd, path) in enumerate(out):
            recs[i] = (ts, tgid, tid, fd, 0, os.fsencode(path)[: L.KP_FD_OPEN["path"].itemsize])
        return recs

    def _path(self, tgid: int, fd: int, dev: int, ino: int) -> str:
        link = self.proc / str(tgid) / "fd" / str(fd)
        try:
            st = os.stat(link)
            path = os.readlink(link)
        except OSError:
            path = ""
        else:
            if st.st_ino != ino or kernel_dev(os.major(st.st_dev), os.minor(st.st_dev)) != dev:
                path = ""
        if path:
            self.resolved += 1
            return path
        self.unresolved += 1
        return inode_name(dev, ino)
