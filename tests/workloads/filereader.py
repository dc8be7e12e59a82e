"""Reads a large file through the page cache (inside a small memcg this forces reclaim)."""
import sys

sys.stdin.readline()
with open(sys.argv[1], "rb", buffering=0) as f:
    while f.read(1 << 20):
        pass
print("done", flush=True)
