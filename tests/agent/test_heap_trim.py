"""malloc_trim gives freed pages inside the C heap back: a heap whose top is still in use keeps them otherwise."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CODE = """
import ctypes, json
from kprobe.agent import heap_trim
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.mallopt(-3, 1 << 20)           # M_MMAP_THRESHOLD: 64 KiB blocks come from the heap, not mmap
libc.mallopt(-1, 1 << 30)           # M_TRIM_THRESHOLD: free() alone never trims
def anon():
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('RssAnon:'))
blocks = []
for _ in range(1024):
    p = libc.malloc(64 << 10)
    ctypes.memset(p, 1, 64 << 10)
    blocks.append(p)
for p in blocks[:-1]:               # the last block stays: the heap cannot shrink from its top
    libc.free(p)
before = anon()
released = heap_trim.trim()
after = anon()
print(json.dumps({"before": before, "after": after, "released": released}))
"""


def test_freed_blocks_below_a_live_one_are_returned() -> None:
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["released"] is True, r
    assert r["before"] - r["after"] > 50_000, r      # 64 MiB freed; well over 50 MB comes back


ARROW = """
import json
import numpy as np
import pyarrow as pa
from kprobe.agent import heap_trim
from kprobe.agent.code_pages import mappings
def arrow_pool_kb():   # mimalloc's reservation: the only anonymous mapping of 1 GiB or more here
    return sum(m.anon_kb for m in mappings(open('/proc/self/smaps').read()) if not m.path and m.end - m.start >= 1 << 30)
x = pa.array(np.arange(2_000_000).astype(str).tolist())
del x
before = arrow_pool_kb()
heap_trim.trim()
print(json.dumps({"pool": pa.default_memory_pool().backend_name, "before": before, "after": arrow_pool_kb()}))
"""


def test_arrow_pool_pages_freed_by_a_batch_are_returned() -> None:
    out = subprocess.run([sys.executable, "-c", ARROW], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    if r["pool"] != "mimalloc":
        pytest.skip(f"Arrow's default pool here is {r['pool']}: the 1 GiB reservation measured is mimalloc's")
    assert r["before"] > 15_000 and r["after"] < r["before"] / 4, r


THRESHOLD = """
import ctypes, json, sys
from kprobe.embedded import EMBEDDED_MMAP_BYTES, EMBEDDED_TRIM_BYTES
from kprobe.topics.malloc import keep_freed_memory
if sys.argv[1] == "fixed":
    keep_freed_memory(mmap_bytes=EMBEDDED_MMAP_BYTES, trim_bytes=EMBEDDED_TRIM_BYTES)
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def anon():
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('RssAnon:'))
def touched(n):
    p = libc.malloc(n)
    ctypes.memset(p, 1, n)
    return p
libc.free(touched(8 << 20))        # one batch-sized buffer freed: glibc's dynamic threshold rises to 8 MiB
base = anon()
bufs = [touched(1 << 20) for _ in range(48)]     # the next flush's buffers
for p in bufs[:-1]:
    libc.free(p)
print(json.dumps({"kept_kb": anon() - base}))
"""


def test_batch_buffers_go_back_when_freed_with_the_embedded_thresholds() -> None:
    """glibc's default raises its mmap threshold after a large free, and 1 MiB buffers then stay in the
    heap once freed; the embedded recorder's fixed thresholds return them at free()."""
    def kept(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", THRESHOLD, mode], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])["kept_kb"]

    default, fixed = kept("default"), kept("fixed")
    assert default > 40_000, default     # 47 MiB freed, still resident
    assert fixed < 4_000, fixed          # only the live one
