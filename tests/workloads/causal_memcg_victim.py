"""Victim of memory pressure: touches MB of fresh anonymous memory twice, outside then inside a memcg.

The median of three passes in its own cgroup (no pressure) is the baseline; then the process moves
itself into CGROUP (cgroup.procs) and repeats the same work, now charging a memcg
that a hog keeps full. Prints "pid start_ns end_ns baseline_wall_ns" for the second
pass: (end - start) - baseline_wall_ns is the delay memory pressure added.
"""
import mmap
import os
import sys
import time


def touch(mb: int) -> tuple[int, int]:
    m = mmap.mmap(-1, mb << 20)
    t0 = time.time_ns()
    for off in range(0, mb << 20, 4096):
        m[off] = 1
    t1 = time.time_ns()
    m.close()
    return t0, t1


sys.stdin.readline()
mb, cgroup = int(sys.argv[1]), sys.argv[2]
base = sorted(b - a for a, b in (touch(mb) for _ in range(3)))[1]     # median of three unpressured passes
with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
    f.write(str(os.getpid()))
t0, t1 = touch(mb)
print(os.getpid(), t0, t1, base, flush=True)
