"""Writes 64 bytes to a file every INTERVAL_MS for DURATION_S seconds; prints "fd count" at the end.

A steady stream of real syscall events of known number, for pipeline tests that break things
(Kafka, a dataflow worker, ClickHouse) while events keep coming.
"""
import os
import sys
import time

sys.stdin.readline()
path, interval_ms, duration_s = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
n = 0
end = time.monotonic() + duration_s
while time.monotonic() < end:
    os.write(fd, b"x" * 64)
    n += 1
    time.sleep(interval_ms / 1000)
os.close(fd)
print(fd, n, flush=True)
