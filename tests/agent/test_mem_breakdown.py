"""The recorder's resident set split by kind: each kind against a mapping whose contents we know."""

from __future__ import annotations

import json
import subprocess
import sys

from kprobe.agent.mem_breakdown import Breakdown, classify

SMAPS = """\
7f0000000000-7f0000800000 r-xp 00000000 fd:01 123 /venv/chdb/_chdb.abi3.so
Rss:                8000 kB
Anonymous:             0 kB
7f0000800000-7f0000900000 rw-p 00800000 fd:01 123 /venv/chdb/_chdb.abi3.so
Rss:                1000 kB
Anonymous:           300 kB
7f0000900000-7f0000a00000 r-xp 00000000 fd:01 124 /usr/lib/libc.so.6
Rss:                 500 kB
Anonymous:             0 kB
7f0000a00000-7f0000a01000 ---p 00000000 00:00 0
Rss:                   0 kB
Anonymous:             0 kB
7f0000a01000-7f0001201000 rw-p 00000000 00:00 0
Rss:                  40 kB
Anonymous:            40 kB
7f0001201000-7f0001400000 rw-p 00000000 00:00 0
Rss:                2000 kB
Anonymous:          2000 kB
7f0001400000-7f0005200000 ---p 00000000 00:00 0
Rss:                   0 kB
Anonymous:             0 kB
7f0005200000-7f0005300000 rw-p 00000000 00:00 0
Rss:                 600 kB
Anonymous:           600 kB
7f0006000000-7f0006200000 r--s 00000000 00:0f 99 anon_inode:bpf-map
Rss:                 700 kB
Anonymous:             0 kB
55d000000000-55d000400000 rw-p 00000000 00:00 0 [heap]
Rss:                4000 kB
Anonymous:          4000 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
Rss:                  80 kB
Anonymous:            80 kB
"""


def test_each_mapping_lands_in_its_kind() -> None:
    bd = Breakdown()
    classify(SMAPS, bd)
    assert bd.chdb_code_kb == 8000 + 700          # the engine's clean pages; its relocated data is anonymous
    assert bd.other_code_kb == 500 and bd.data_files_kb == 0
    assert bd.rings_kb == 700
    assert bd.heap_kb == 4000
    # the stack after a one-page guard and the main [stack]; the mapping after a 60 MB reserved arena
    # tail is not a stack
    assert bd.stacks_kb == 40 + 80
    assert bd.anon_other_kb == 300 + 2000 + 600


def test_a_real_process_shows_what_it_allocated_and_mapped(tmp_path) -> None:
    """A child touches 64 MiB of anonymous memory and maps a 32 MiB file: the split sees both."""
    blob = tmp_path / "blob"
    blob.write_bytes(b"\x01" * (32 << 20))
    code = f"""
import json, mmap
import numpy as np
from kprobe.agent.mem_breakdown import breakdown
b0 = breakdown()
a = np.ones(64 << 20, dtype=np.uint8)
f = open({str(blob)!r}, 'rb')
m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
s = sum(m[i] for i in range(0, len(m), 4096))
b1 = breakdown()
print(json.dumps({{"b0": b0.mb(), "b1": b1.mb(), "s": s}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    b0, b1 = r["b0"], r["b1"]
    assert r["s"] == 32 << 8
    assert 63 <= b1["anon_mb"] - b0["anon_mb"] <= 70, r
    assert 63 <= (b1["heap_mb"] + b1["anon_other_mb"]) - (b0["heap_mb"] + b0["anon_other_mb"]) <= 70, r
    assert 31 <= b1["file_mb"] - b0["file_mb"] <= 34, r
    # a data file is not a library: only the kernel's file total sees it
    assert 31 <= b1["data_files_mb"] - b0["data_files_mb"] <= 34, r
    assert abs(b1["other_code_mb"] - b0["other_code_mb"]) < 2 and b1["chdb_code_mb"] == 0, r
    assert abs(b1["rss_mb"] - b1["anon_mb"] - b1["file_mb"] - b1["shmem_mb"]) <= 0.2, r
