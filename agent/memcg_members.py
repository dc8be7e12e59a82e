"""Who is in a memory cgroup that is full right now, and how much each member holds.

A task stalled in memcg reclaim waits for memory that the cgroup's other
members filled; those members often do not reclaim at the same moment (a batch
job that dirtied its page cache and now waits for writeback, an idle process
holding anonymous memory), so the reclaim rows alone cannot name them. The
kernel keeps no per-task charge counters, so this reads what /proc and the
cgroup files say while the stall lasts: the members (``cgroup.procs``), each
member's resident memory (exact for anonymous and shared memory) and file I/O
volume (a bound on the page cache it brought in), and the cgroup's own usage,
limit, dirty and writeback totals.

The recorder asks for a snapshot when it sees a memcg reclaim in progress (the
probe's in-flight map) or finished (the reclaim rows); at most one per cgroup
per ``every_ns``, so a cgroup that thrashes for minutes costs a few file reads a
second. Works on cgroup v1 (the memory controller's hierarchy) and v2.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kprobe.schemas.store_tables import MEMCG_MEMBERS_COLUMNS

V1_ROOT = Path("/sys/fs/cgroup/memory")
V2_ROOT = Path("/sys/fs/cgroup")

_NUMERIC = {n: t for n, t in MEMCG_MEMBERS_COLUMNS if t.startswith("UInt")}
_DTYPES = {"UInt32": np.uint32, "UInt64": np.uint64}
# memory.stat keys: cgroup v1 (this cgroup only, not its children), then v2
_STAT_KEYS = {"memcg_anon": ("rss", "anon"), "memcg_file": ("cache", "file"),
              "memcg_dirty": ("dirty", "file_dirty"), "memcg_writeback": ("writeback", "file_writeback")}


def _read(path: Path | str) -> str:
    """One /proc or cgroup file; os-level calls, as a snapshot reads two files per member (~2x cheaper than
    pathlib's read_text)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:        # the process or cgroup went away meanwhile: a snapshot is a best effort
        return ""
    try:
        chunks = []
        while chunk := os.read(fd, 65536):     # to the end: a cut cgroup.procs would end in a partial pid
            chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")
    except OSError:
        return ""
    finally:
        os.close(fd)


def _kv(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


def _int(s: str | None, scale: int = 1) -> int:
    try:
        return int((s or "0").split()[0]) * scale
    except ValueError:     # "max" (v2, no limit)
        return 0


def memory_root() -> Path | None:
    """The hierarchy whose directory inodes are the probes' memcg ids (see kp_memcg_id)."""
    if (V1_ROOT / "memory.limit_in_bytes").exists():
        return V1_ROOT
    if "memory" in _read(V2_ROOT / "cgroup.controllers").split():
        return V2_ROOT
    return None


@dataclass
class MemcgMembers:
    root: Path | None = field(default_factory=memory_root)
    proc: Path = Path("/proc")
    every_ns: int = 1_000_000_000
    max_members: int = 256
    truncated: int = 0          # members left out because a cgroup had more than max_members
    unresolved: int = 0         # memcg ids with no directory (the cgroup was removed before we looked)
    _paths: dict[int, Path] = field(default_factory=dict)
    _last: dict[int, int] = field(default_factory=dict)
    _walked_ns: int = -(10**18)

    def due(self, ids: Iterable[int], now_ns: int) -> list[int]:
        """The ids not inspected within the last ``every_ns``; they count as inspected from now."""
        out = []
        for i in sorted({int(i) for i in ids if i}):
            if now_ns - self._last.get(i, -(10**18)) >= self.every_ns:
                self._last[i] = now_ns
                out.append(i)
        if len(self._last) > 4096:       # forget cgroups not seen for a minute
            self._last = {k: v for k, v in self._last.items() if now_ns - v < 60 * 10**9}
        return out

    def path_of(self, memcg_id: int, now_ns: int) -> Path | None:
        """A cgroup's kernfs id is its directory's inode number; the tree is walked again on a miss
        (a new cgroup), at most once per ``every_ns`` so a vanished id does not walk it every time."""
        p = self._paths.get(memcg_id)
        if p is not None and p.exists():
            return p
        if self.root is None or now_ns - self._walked_ns < self.every_ns:
            return None
        self._walked_ns = now_ns
        self._paths = {}
        for d, _, _ in os.walk(self.root):
            try:
                self._paths[os.stat(d).st_ino] = Path(d)
            except OSError:
                continue
        return self._paths.get(memcg_id)

    def snapshot(self, ids: Iterable[int], ts_ns: int, host: str, now_ns: int) -> dict[str, np.ndarray] | None:
        """One row per member of each cgroup (a tgid 0 row when it has none left), or None if nothing was read."""
        rows: list[dict[str, object]] = []
        for memcg_id in ids:
            d = self.path_of(memcg_id, now_ns)
            if d is None:
                self.unresolved += 1
                continue
            cg = self._cgroup_totals(d)
            rel = "/" + str(d.relative_to(self.root)) if self.root and d != self.root else "/"
            pids = sorted({int(x) for x in _read(d / "cgroup.procs").split()})
            if len(pids) > self.max_members:
                self.truncated += len(pids) - self.max_members
                pids = pids[: self.max_members]
            members = [m for m in (self._member(p) for p in pids) if m is not None]
            for m in members or [{"tgid": 0, "comm": ""}]:
                rows.append({"ts": ts_ns, "host": host, "cgroup_id": memcg_id, "cgroup": rel, **cg, **m})
        if not rows:
            return None
        cols: dict[str, np.ndarray] = {}
        for name, typ in MEMCG_MEMBERS_COLUMNS:
            if name in _NUMERIC:
                cols[name] = np.array([int(r.get(name, 0)) for r in rows], dtype=_DTYPES[typ])
            else:
                cols[name] = np.array([str(r.get(name, "")) for r in rows], dtype=object)
        return cols

    def _cgroup_totals(self, d: Path) -> dict[str, int]:
        v1 = (d / "memory.usage_in_bytes").exists()
        usage = _int(_read(d / ("memory.usage_in_bytes" if v1 else "memory.current")))
        limit = _int(_read(d / ("memory.limit_in_bytes" if v1 else "memory.max")))
        if limit >= 1 << 62:        # v1's "no limit" is a huge number
            limit = 0
        stat = dict(line.split(" ", 1) for line in _read(d / "memory.stat").splitlines() if " " in line)
        out = {"memcg_usage": usage, "memcg_limit": limit}
        for col, (k1, k2) in _STAT_KEYS.items():
            out[col] = _int(stat.get(k1 if v1 else k2))
        return out

    def _member(self, tgid: int) -> dict[str, object] | None:
        base = f"{self.proc}/{tgid}"
        status = _kv(_read(f"{base}/status"))
        comm = status.get("Name", "")
        if not comm:
            return None
        io = _kv(_read(f"{base}/io"))
        return {"tgid": tgid, "comm": comm,
                "rss_anon": _int(status.get("RssAnon"), 1024), "rss_file": _int(status.get("RssFile"), 1024),
                "rss_shmem": _int(status.get("RssShmem"), 1024),
                "read_bytes": _int(io.get("read_bytes")), "write_bytes": _int(io.get("write_bytes"))}
