"""Memory hog made of dirty page cache: rewrites a 128 MiB range of PATH for SECONDS.

Inside a memcg-limited cgroup (and a throttled device) it keeps the memcg full of
dirty and under-writeback pages, so anyone charging memory to that memcg stalls in
reclaim waiting for writeback (and the hog reclaims too, for its own new pages).
Once it has dirtied LIMIT bytes it starts their writeback (fadvise DONTNEED writes
dirty pages and drops only clean ones: on a throttled device they stay under
writeback for seconds) and prints "ready".
"""
import os
import sys
import time

path, seconds, ready_after = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
buf = b"D" * (1 << 20)
end = time.monotonic() + seconds
i = 0
while time.monotonic() < end:
    os.pwrite(fd, buf, (i % 128) << 20)
    i += 1
    if i << 20 == ready_after:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        print("ready", flush=True)
