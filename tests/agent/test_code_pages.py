"""Unmapping a library's clean code pages: only read-only mappings without private pages, and the code still runs."""

from __future__ import annotations

import subprocess
import sys

from kprobe.agent.code_pages import Mapping, droppable, mappings

SMAPS = """\
7f0000000000-7f0000100000 r--p 00000000 fd:01 123 /venv/chdb/_chdb.abi3.so
Rss:                 400 kB
Anonymous:             0 kB
7f0000100000-7f0000900000 r-xp 00100000 fd:01 123 /venv/chdb/_chdb.abi3.so
Rss:               90000 kB
Anonymous:             0 kB
7f0000900000-7f0000a00000 r--p 00900000 fd:01 123 /venv/chdb/_chdb.abi3.so
Rss:                9000 kB
Anonymous:          9000 kB
7f0000a00000-7f0000b00000 rw-p 00a00000 fd:01 123 /venv/chdb/_chdb.abi3.so
Rss:                1000 kB
Anonymous:           200 kB
7f0000b00000-7f0000c00000 r-xp 00000000 fd:01 124 /usr/lib/libc.so.6
Rss:                1000 kB
Anonymous:             0 kB
7f0000c00000-7f0000d00000 rw-p 00000000 00:00 0
Rss:                1000 kB
Anonymous:          1000 kB
"""


def test_only_clean_read_only_mappings_of_the_library_are_dropped() -> None:
    maps = mappings(SMAPS)
    assert len(maps) == 6 and maps[-1].path == "" and maps[1].rss_kb == 90000
    got = droppable(maps, "_chdb")
    # the relocated read-only data (anonymous pages) and the writable data would lose their contents
    assert got == [Mapping(0x7f0000000000, 0x7f0000100000, "r--p", "/venv/chdb/_chdb.abi3.so", 400, 0),
                   Mapping(0x7f0000100000, 0x7f0000900000, "r-xp", "/venv/chdb/_chdb.abi3.so", 90000, 0)]


def test_the_engine_keeps_working_after_its_pages_are_unmapped(tmp_path) -> None:
    """In a child process: open the store, trim, then query and insert; the resident set must shrink."""
    code = f"""
import json
from pathlib import Path
from kprobe.agent.code_pages import trim
from kprobe.sinks.chdb_store import ChdbStore
def rss():
    return {{k: int(v.split()[0]) for k, v in (l.split(':', 1) for l in open('/proc/self/status'))
            if k in ('VmRSS', 'RssFile')}}
s = ChdbStore(Path({str(tmp_path)!r}))
s.query("INSERT INTO offcpu (tgid, tid, ts, end_ts) VALUES (7, 7, 1000, 2000)")
before = rss()
kb = trim('_chdb')
after = rss()
n = s.query_rows("SELECT count() AS n, max(end_ts) AS e FROM offcpu WHERE tgid = 7")
s.query("INSERT INTO offcpu (tgid, tid, ts, end_ts) VALUES (7, 7, 3000, 4000)")
m = s.query_rows("SELECT count() AS n FROM offcpu WHERE tgid = 7")
s.close()
print(json.dumps({{"kb": kb, "before": before, "after": after, "rows": n, "rows2": m}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["kb"] > 50_000, r                                    # start-up touched far more than that
    assert r["before"]["RssFile"] - r["after"]["RssFile"] > 50_000, r
    assert int(r["rows"][0]["n"]) == 1 and int(r["rows"][0]["e"]) == 2000 and int(r["rows2"][0]["n"]) == 2, r


def test_every_shared_object_is_trimmed_and_keeps_working() -> None:
    """The recorder trims every shared object (SHARED_OBJECTS), not the engine alone: numpy, Arrow and
    libpython must run on after their pages are unmapped, and the resident file pages must shrink."""
    code = """
import json
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from kprobe.agent.code_pages import SHARED_OBJECTS, droppable, mappings, trim
def rss_file():
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('RssFile:'))
a = np.arange(1_000_000)
before = rss_file()
libs = {m.path.rsplit('/', 1)[-1] for m in droppable(mappings(open('/proc/self/smaps').read()), SHARED_OBJECTS)}
kb = trim(SHARED_OBJECTS)
after = rss_file()
s = int(pc.sum(pa.array(a * 2)).as_py())
print(json.dumps({"kb": kb, "before": before, "after": after, "sum": s, "libs": sorted(libs)}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["sum"] == 999_999 * 1_000_000, r
    assert any(n.startswith("libarrow.so") for n in r["libs"]) and any(n.startswith("libc.so") for n in r["libs"]), r
    assert r["kb"] > 20_000 and r["before"] - r["after"] > 20_000, r
