"""Victim of memory pressure: touches MB of fresh anonymous memory, first without pressure, then with.

The baseline is the median of five passes before and five after, in BASE_CGROUP
(a memcg without a limit: charging a non-root memcg costs something even without
pressure, the root memcg charges nothing), so drift over the run averages out; in
between, the process moves itself into CGROUP and repeats the same work, now
charging a memcg that a hog keeps full. Prints
"pid start_ns end_ns baseline_wall_ns" for that pass: (end - start) - baseline_wall_ns
is the delay memory pressure added.

Usage: causal_memcg_victim.py MB CGROUP [BASE_CGROUP]
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


def join(cgroup: str) -> None:
    with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))


sys.stdin.readline()
mb, cgroup = int(sys.argv[1]), sys.argv[2]
base_cg = sys.argv[3] if len(sys.argv) > 3 else None
if base_cg:
    join(base_cg)
walls = [b - a for a, b in (touch(mb) for _ in range(5))]
join(cgroup)
t0, t1 = touch(mb)
if base_cg:
    join(base_cg)
walls += [b - a for a, b in (touch(mb) for _ in range(5))]
print(os.getpid(), t0, t1, sorted(walls)[len(walls) // 2], flush=True)
