"""Touches M fresh anonymous pages, one write per page."""
import mmap
import sys

sys.stdin.readline()
m = int(sys.argv[1])
page = mmap.PAGESIZE
buf = mmap.mmap(-1, m * page, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for i in range(m):
    buf[i * page] = 1
print("done", flush=True)
