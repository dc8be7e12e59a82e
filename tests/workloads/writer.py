"""N writes of known sizes to a known file, one fsync; prints the fd and wall-clock bracket."""
import os
import sys
import time

sys.stdin.readline()
path, sizes = sys.argv[1], [int(x) for x in sys.argv[2].split(",")]
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
before = time.time_ns()
for s in sizes:
    os.write(fd, b"x" * s)
after = time.time_ns()
os.fsync(fd)
os.close(fd)
print(fd, before, after, flush=True)
