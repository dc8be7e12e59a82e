"""The memcg member snapshot against a real memory cgroup and a process whose memory is known."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kprobe.agent.memcg_members import MemcgMembers, memory_root
from kprobe.causal.analyze import _Ctx
from kprobe.causal.model import Interval
from kprobe.causal.records import Evidence, MemcgMember, Reclaim
from kprobe.schemas.store_tables import MEMCG_MEMBERS_COLUMNS

MB = 1 << 20
HOLDER = """import mmap, os, sys
m = mmap.mmap(-1, {anon} << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for off in range(0, len(m), 4096):
    m[off] = 1
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644)
os.write(fd, b"x" * ({wrote} << 20))
print("ready", flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def memcg() -> tuple[Path, Path]:
    root = memory_root()
    if root is None or os.geteuid() != 0:
        pytest.skip("needs root and a memory cgroup controller (v1 or v2)")
    d = root / f"kprobe-test-members-{os.getpid()}"
    d.mkdir()
    try:
        yield root, d
    finally:
        for _ in range(50):        # a member that just exited may still be listed for a moment
            try:
                d.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def _join(d: Path, anon: int, wrote: int, path: Path) -> subprocess.Popen:
    p = subprocess.Popen(["sh", "-c", f'echo $$ > {d}/cgroup.procs && exec "$0" "$@"', sys.executable, "-c",
                          HOLDER.format(anon=anon, wrote=wrote), str(path)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


def test_snapshot_lists_each_member_with_the_memory_it_holds(memcg, tmp_path):
    root, d = memcg
    big, small = _join(d, 48, 16, tmp_path / "big"), _join(d, 4, 0, tmp_path / "small")
    try:
        snap = MemcgMembers(root=root)
        ino = d.stat().st_ino
        assert snap.due([ino, ino, 0], 10**9) == [ino] and snap.due([ino], 10**9 + 1) == []   # once a second
        cols = snap.snapshot([ino], 123, "h", 10**9)
    finally:
        for p in (big, small):
            p.communicate("\n", timeout=10)
    assert cols is not None and set(cols) == {n for n, _ in MEMCG_MEMBERS_COLUMNS}
    rows = {int(t): i for i, t in enumerate(cols["tgid"])}
    assert set(rows) == {big.pid, small.pid}
    b, s = rows[big.pid], rows[small.pid]
    assert 48 * MB <= cols["rss_anon"][b] < 64 * MB and 4 * MB <= cols["rss_anon"][s] < 16 * MB
    assert 16 * MB <= cols["write_bytes"][b] < 17 * MB and cols["write_bytes"][s] < MB   # + what python wrote
    assert cols["cgroup_id"][b] == ino and cols["cgroup"][b] == "/" + d.name and cols["ts"][b] == 123
    assert cols["memcg_usage"][b] >= 52 * MB and cols["memcg_limit"][b] == 0     # no limit set
    assert snap.snapshot([ino + 10**12], 1, "h", 5 * 10**9) is None and snap.unresolved == 1


def _member(tgid: int, anon: int, io: int, memcg: int = 5, file: int = 40 * MB) -> MemcgMember:
    return MemcgMember(memcg, 1_000, tgid, f"p{tgid}", anon, 0, io, 64 * MB, 64 * MB, file, 0, 30 * MB, "/pod")


def test_without_another_reclaimer_the_member_holding_most_of_the_memcg_is_the_culprit():
    victim = Reclaim(7, 7, "victim", "memcg", 0, 10**9, 32, 0, memcg=5)
    ev = Evidence(Interval(7, 0, 10**9), reclaims=[victim],
                  memcg_members=[_member(7, 8 * MB, 0), _member(8, 2 * MB, 10**10),      # page cache: capped
                                 _member(9, 30 * MB, 0), _member(10, 99 * MB, 0, memcg=6)])   # other memcg
    cul, top = _Ctx(ev).top_reclaimer(exclude=7, own=[victim])
    assert cul.pid == 8 and [m["member"] for m in top["top_members"]] == [8, 9]
    assert top["memcg"]["writeback_bytes"] == 30 * MB and top["top_members"][0]["held_bytes"] == 42 * MB
    # another member's reclaim is the stronger evidence: it names the culprit, the snapshot stays as context
    other = Reclaim(9, 9, "p9", "memcg", 0, 10**8, 64, 0, memcg=5)
    ev.reclaims.append(other)
    cul, top = _Ctx(ev).top_reclaimer(exclude=7, own=[victim])
    assert cul.pid == 9 and top["top_members"][0]["member"] == 8


def test_a_long_cgroup_procs_is_read_whole(tmp_path):
    """A busy cgroup's cgroup.procs exceeds one read: a cut would end in a partial pid, naming another process."""
    from kprobe.agent.memcg_members import _read

    f = tmp_path / "cgroup.procs"
    f.write_text("\n".join(str(p) for p in range(100_000, 120_000)) + "\n")     # 140 KB
    assert _read(f).split() == [str(p) for p in range(100_000, 120_000)]
