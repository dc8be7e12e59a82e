"""CPU quota throttling, from the cgroups' own counters: the evidence no scheduler event carries.

A task in a cgroup whose CPU quota (v1 ``cpu.cfs_quota_us``, v2 ``cpu.max``) is used
up is taken off its CPU until the next period although it is runnable: the switch
looks like a preemption by whoever runs next (often idle), so off-CPU rows alone
blame an innocent neighbour. The kernel has no throttle tracepoint (6.18:
sched_switch shows a throttled task as preempted; the throttle and unthrottle
functions are not tracepoints, and kprobes/fentry are not allowed here), but each
cgroup counts its throttled periods and time in ``cpu.stat``. This samples, for
every cgroup with a quota, those counters every ``every_ns`` and, while it is
being throttled, its members and each member's CPU time (who used the quota).
A sample that is not written keeps only the counters (a tgid 0 row if it is written later).

A sample becomes rows only when the throttle counters moved since the previous
one (plus that previous sample and the first still one after, so the causal engine
can interpolate the counter across a window) or every ``idle_every_ns`` otherwise: an idle or well-sized
cgroup costs a file read per sample and no rows.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kprobe.schemas.store_tables import CGROUP_CPU_COLUMNS

V1_ROOTS = (Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup/cpu,cpuacct"))
V2_ROOT = Path("/sys/fs/cgroup")
_DTYPES = {"UInt32": np.uint32, "UInt64": np.uint64, "Int64": np.int64}


def _read(path: Path | str) -> str:
    """A cgroup or /proc file, "" when it is gone (a cgroup removed or a process exited meanwhile)."""
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _stat(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        try:
            out[k] = int(v)
        except ValueError:
            continue
    return out


@dataclass(frozen=True)
class Hierarchy:
    """Where quotas live: the v1 cpu controller's mount, or the unified (v2) tree with the cpu controller."""

    root: Path
    v2: bool

    @staticmethod
    def find() -> Hierarchy | None:
        for r in V1_ROOTS:
            if (r / "cpu.cfs_quota_us").exists():
                return Hierarchy(r, False)
        if "cpu" in _read(V2_ROOT / "cgroup.controllers").split():
            return Hierarchy(V2_ROOT, True)
        return None

    def quota(self, d: Path) -> tuple[int, int]:
        """(quota µs, period µs); quota -1 when the cgroup has none."""
        if self.v2:
            parts = _read(d / "cpu.max").split()
            if len(parts) != 2 or parts[0] == "max":
                return -1, 0
            return int(parts[0]), int(parts[1])
        try:
            return int(_read(d / "cpu.cfs_quota_us") or -1), int(_read(d / "cpu.cfs_period_us") or 0)
        except ValueError:
            return -1, 0

    def counters(self, d: Path) -> tuple[int, int, int, int] | None:
        """(nr_periods, nr_throttled, throttled ns, usage ns or 0) from cpu.stat (v1 usage: cpuacct)."""
        s = _stat(_read(d / "cpu.stat"))
        if "nr_throttled" not in s:
            return None
        if self.v2:
            return s.get("nr_periods", 0), s["nr_throttled"], s.get("throttled_usec", 0) * 1000, s.get("usage_usec", 0) * 1000
        usage = _read(d / "cpuacct.usage")
        if not usage:
            rel = d.relative_to(self.root)
            usage = _read(self.root.parent / "cpuacct" / rel / "cpuacct.usage")
        try:
            u = int(usage)
        except ValueError:
            u = 0
        return s.get("nr_periods", 0), s["nr_throttled"], s.get("throttled_time", 0), u


def _member(proc: Path, tgid: int, tick_ns: int) -> tuple[str, int] | None:
    """(comm, CPU time used so far in ns: utime + stime of all its threads) of one member."""
    st = _read(proc / str(tgid) / "stat")
    if not st:
        return None
    head, _, tail = st.rpartition(")")
    comm = head.partition("(")[2]
    f = tail.split()
    try:
        return comm, (int(f[11]) + int(f[12])) * tick_ns    # fields 14, 15 of /proc/PID/stat
    except (IndexError, ValueError):
        return None


@dataclass
class CgroupCpu:
    """The sampler; ``due`` and ``sample`` both run on the drain thread (a counter's time is when it was read)."""

    hierarchy: Hierarchy | None = field(default_factory=Hierarchy.find)
    proc: Path = Path("/proc")
    every_ns: int = 250_000_000
    idle_every_ns: int = 10_000_000_000
    walk_every_ns: int = 2_000_000_000       # a big tree (more than small_tree cgroups) is walked this often
    small_tree: int = 256                    # a smaller one at every sample: a new cgroup is seen within one
    max_members: int = 64
    stats: dict[str, int] = field(default_factory=dict)   # samples, rows, quota_cgroups, members beyond the cap
    _tick_ns: int = field(default_factory=lambda: 1_000_000_000 // os.sysconf("SC_CLK_TCK"))
    _dirs: list[Path] = field(default_factory=list)
    _walked: int = -(10**18)
    _due: int = -(10**18)
    _started_ns: int = field(default_factory=time.time_ns)
    # per cgroup: (counters, written?, when last written, its rows, counters moved?) of the latest sample
    _last: dict[Path, tuple[tuple[int, int, int, int], bool, int, list[dict], bool]] = field(default_factory=dict)

    def due(self, now_ns: int) -> bool:
        if self.hierarchy is None or now_ns - self._due < self.every_ns:
            return False
        self._due = now_ns
        return True

    def _quota_dirs(self, now_ns: int) -> list[Path]:
        """Cgroups with a quota (new containers, a quota set later), found by walking the tree: at every
        sample while it is small (~10 µs a cgroup), at most every ``walk_every_ns`` once it is big."""
        every = self.every_ns if self.stats.get("cgroups", 0) <= self.small_tree else self.walk_every_ns
        if now_ns - self._walked >= every and self.hierarchy is not None:
            self._walked = now_ns
            found, seen = [], 0
            for d, _, _ in os.walk(self.hierarchy.root):
                seen += 1
                if self.hierarchy.quota(Path(d))[0] > 0:
                    found.append(Path(d))
            self.stats["cgroups"] = seen
            self._dirs = found
            self._last = {k: v for k, v in self._last.items() if k in set(found)}
            self.stats["quota_cgroups"] = len(found)
        return self._dirs

    def sample(self, ts_ns: int, host: str, now_ns: int) -> dict[str, np.ndarray] | None:
        """Rows of the cgroups whose throttle counters moved (and their previous sample), or None."""
        h = self.hierarchy
        if h is None:
            return None
        rows: list[dict[str, object]] = []
        self.stats["samples"] = self.stats.get("samples", 0) + 1
        for d in self._quota_dirs(now_ns):
            cnt = h.counters(d)
            if cnt is None:
                continue
            quota, period = h.quota(d)
            rel = "/" + str(d.relative_to(h.root)) if d != h.root else "/"
            base = {"host": host, "cgroup_id": _ino(d), "cgroup": rel, "quota_us": quota, "period_us": period,
                    "nr_periods": cnt[0], "nr_throttled": cnt[1], "throttled_ns": cnt[2], "usage_ns": cnt[3]}
            prev = self._last.get(d)
            if prev is None and (born := _ctime_ns(d)) > self._started_ns and cnt[1]:
                # a cgroup created since we started, throttled before we first saw it: its counters were 0
                # when it was made, a true base for the time before this first sample
                rows.append({"ts": born, **base, "nr_periods": 0, "nr_throttled": 0, "throttled_ns": 0,
                             "usage_ns": 0, "tgid": 0, "comm": "", "cpu_ns": 0})
            moved = prev is None or prev[0][1] != cnt[1] or prev[0][2] != cnt[2]
            # the first still sample after a moving one is written too: it closes the throttled stretch
            emit = moved or (prev is not None and prev[4]) or ts_ns - (prev[2] if prev else 0) >= self.idle_every_ns
            if emit and prev is not None and not prev[1]:
                rows.extend(prev[3])         # the sample before throttling started: the counter's base
            # members only for a sample that becomes rows (a /proc read each); an unemitted one keeps the counters
            members = self._members(d) if emit else []
            mine = [{"ts": ts_ns, **base, **m} for m in members or [{"tgid": 0, "comm": "", "cpu_ns": 0}]]
            if emit:
                rows.extend(mine)
            self._last[d] = (cnt, emit, ts_ns if emit else (prev[2] if prev else 0), mine, moved)
        if not rows:
            return None
        self.stats["rows"] = self.stats.get("rows", 0) + len(rows)
        cols: dict[str, np.ndarray] = {}
        for name, typ in CGROUP_CPU_COLUMNS:
            if typ in _DTYPES:
                cols[name] = np.array([int(r.get(name, 0)) for r in rows], dtype=_DTYPES[typ])  # type: ignore[call-overload]
            else:
                cols[name] = np.array([str(r.get(name, "")) for r in rows], dtype=object)
        return cols

    def _members(self, d: Path) -> list[dict]:
        pids = sorted({int(x) for x in _read(d / "cgroup.procs").split()})
        if len(pids) > self.max_members:
            self.stats["truncated_members"] = self.stats.get("truncated_members", 0) + len(pids) - self.max_members
            pids = pids[: self.max_members]
        out = []
        for p in pids:
            m = _member(self.proc, p, self._tick_ns)
            if m is not None:
                out.append({"tgid": p, "comm": m[0], "cpu_ns": m[1]})
        return out


def _ctime_ns(d: Path) -> int:
    try:
        return os.stat(d).st_ctime_ns
    except OSError:
        return 0


def _ino(d: Path) -> int:
    try:
        return os.stat(d).st_ino
    except OSError:
        return 0
