"""Write N blocks of SIZE bytes with O_DIRECT to a block device at offsets 0, SIZE, 2*SIZE... then fsync.

Direct I/O skips the page cache, so every byte reaches the device as a request this process submits.
"""
import mmap
import os
import sys

sys.stdin.readline()
dev, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
buf = mmap.mmap(-1, size)  # page-aligned, as O_DIRECT requires
buf.write(b"\xab" * size)
fd = os.open(dev, os.O_WRONLY | os.O_DIRECT)
for i in range(n):
    assert os.pwrite(fd, buf, i * size) == size
os.fsync(fd)
os.close(fd)
print("done", flush=True)
