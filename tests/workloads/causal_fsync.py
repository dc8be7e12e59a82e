"""Slow fsync: writes SIZE bytes to PATH (buffered), then times one fsync of them.

Run it inside a blkio cgroup whose write_bps_device throttles the file's device:
the fsync then waits for its own throttled writeback. Prints
"pid fsync_start_ns fsync_end_ns".
"""
import os
import sys
import time

sys.stdin.readline()
path, size = sys.argv[1], int(sys.argv[2])
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, b"L" * size)
t0 = time.time_ns()
os.fsync(fd)
t1 = time.time_ns()
os.close(fd)
print(os.getpid(), t0, t1, flush=True)
