"""Memory hog made of page cache under writeback: fills its memcg with it, then holds it SECONDS.

Inside a memcg-limited cgroup on a throttled device it leaves the memcg full of
pages under (throttled) writeback and nothing else reclaimable, so anyone
charging memory to that memcg stalls in reclaim until enough of that writeback
completes: the stall is set by the device's throttle. Dirty pages alone would not
do: reclaim wakes the flusher, whose writeback is not throttled (cgroup v1), and
a hog that kept dirtying competed with the victim for the pages cleaned meanwhile,
so the victim sometimes got them without a stall.

How: dirty LIMIT bytes and start their writeback from this process (fadvise
DONTNEED writes dirty pages in the caller's context, so the throttle applies, and
drops the clean ones); then, while the memcg has more than a MiB of room (the
clean pages just dropped), dirty new pages into it and start their writeback too.
Prints "ready", then dirties 32 new pages every 100 ms (1.25 MiB/s against the
device's 2 MiB/s): as the memcg's charger it stalls in reclaim too, during the
victim's stall, as a real hog that keeps allocating would (a page at a time was
often served from the slack the victim's reclaim left, and then the hog did not
reclaim at all while the victim stalled).

With IDLE set, it only waits after "ready": a hog that filled its memcg and
stopped allocating, which never reclaims while others stall on its pages.

Usage: causal_dirty_hog.py PATH SECONDS LIMIT [MEMCG_DIR [IDLE]]
"""
import os
import sys
import time

MB = 1 << 20
TRICKLE = 32 * 4096    # one reclaim batch (SWAP_CLUSTER_MAX): more than the slack another's reclaim leaves
path, seconds, limit = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
memcg = sys.argv[4] if len(sys.argv) > 4 else None
idle = len(sys.argv) > 5 and sys.argv[5] == "idle"
fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
buf = b"D" * MB
end = time.monotonic() + seconds
most = 3 * limit          # never write more than this (the file system is small)


def room() -> int:
    with open(os.path.join(memcg, "memory.usage_in_bytes")) as f:
        return limit - int(f.read())


off = 0
while off < limit:
    os.pwrite(fd, buf, off)
    off += MB
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
while memcg and off < most and room() > MB and time.monotonic() < end:
    first = off
    for _ in range(max(1, min(room(), 4 * MB) // MB)):
        os.pwrite(fd, buf, off)
        off += MB
    os.posix_fadvise(fd, first, off - first, os.POSIX_FADV_DONTNEED)
print("ready", flush=True)
while time.monotonic() < end:      # 32 new pages every 100 ms: still the memcg's charger, a minor rival
    if off < most and not idle:
        os.pwrite(fd, buf[:TRICKLE], off)
        off += TRICKLE
    time.sleep(0.1)
