"""Interrupt time per CPU, from the kernel's own counters: the CPU time no task's switches show.

Hard and soft interrupts (a network receive flood, a storage controller's
completions) run on whatever task holds the CPU, or in ksoftirqd/N once they pile
up. The interrupted task looks on-CPU throughout: its off-CPU rows cannot show the
time taken from it, and tracing every softirq entry and exit system-wide costs
more than the recorder may (issue 13). The kernel already counts that time per CPU
(/proc/stat's irq and softirq columns, tick-sampled unless IRQ_TIME_ACCOUNTING) and
each softirq's raises per CPU (/proc/softirqs: which kind: NET_RX, BLOCK, TIMER, ...).

This samples both every ``every_ns`` (two small file reads, ~50 µs on this host).
A sample becomes rows (one per CPU) only when some CPU spent at least
``busy_share`` of the time since the previous sample in interrupts (plus that
previous sample, the counters' base, and the first quiet one after, which closes
the busy stretch), or every ``idle_every_ns`` otherwise: a quiet host costs the
reads and no rows. The causal engine interpolates the cumulative counters over a
window (causal/analyze.py ``_irq_time``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kprobe.schemas.store_tables import CPU_IRQ_COLUMNS, SOFTIRQ_KINDS

_DTYPES = {"UInt32": np.uint32, "UInt64": np.uint64}


def _read(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def parse_stat(text: str, tick_ns: int) -> dict[int, tuple[int, int]]:
    """{cpu: (irq ns, softirq ns)} from /proc/stat (columns 6 and 7 of each ``cpuN`` line, in USER_HZ ticks)."""
    out: dict[int, tuple[int, int]] = {}
    for line in text.splitlines():
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        f = line.split()
        try:
            out[int(f[0][3:])] = (int(f[6]) * tick_ns, int(f[7]) * tick_ns)
        except (IndexError, ValueError):
            continue
    return out


def parse_softirqs(text: str) -> dict[int, dict[str, int]]:
    """{cpu: {kind: raises so far}} from /proc/softirqs (a header of CPUn, then one line per softirq kind)."""
    lines = text.splitlines()
    if not lines:
        return {}
    cpus = [int(c[3:]) for c in lines[0].split() if c.startswith("CPU") and c[3:].isdigit()]
    out: dict[int, dict[str, int]] = {c: {} for c in cpus}
    for line in lines[1:]:
        name, _, rest = line.partition(":")
        kind = name.strip().lower()
        if kind not in SOFTIRQ_KINDS:
            continue
        for c, v in zip(cpus, rest.split(), strict=False):   # a line may be short
            try:
                out[c][kind] = int(v)
            except ValueError:
                continue
    return out


@dataclass
class CpuIrq:
    """The sampler; ``due`` and ``sample`` run on the drain thread (a counter's time is when it was read)."""

    proc: Path = Path("/proc")
    every_ns: int = 1_000_000_000
    idle_every_ns: int = 10_000_000_000
    busy_share: float = 0.05
    stats: dict[str, int] = field(default_factory=dict)   # samples, rows, busy samples
    _tick_ns: int = field(default_factory=lambda: 1_000_000_000 // os.sysconf("SC_CLK_TCK"))
    _due: int = -(10**18)
    # the previous sample: (ts, its rows, written?, was busy?) and when rows were last written
    _prev: tuple[int, list[dict], bool, bool] | None = None
    _written: int = 0

    def due(self, now_ns: int) -> bool:
        if now_ns - self._due < self.every_ns:
            return False
        self._due = now_ns
        return True

    def read(self, ts_ns: int, host: str) -> list[dict]:
        """One row per CPU: its interrupt time and softirq raises so far."""
        stat = parse_stat(_read(self.proc / "stat"), self._tick_ns)
        soft = parse_softirqs(_read(self.proc / "softirqs"))
        return [{"ts": ts_ns, "host": host, "cpu": c, "irq_ns": irq, "softirq_ns": si, **soft.get(c, {})}
                for c, (irq, si) in sorted(stat.items())]

    def sample(self, ts_ns: int, host: str) -> dict[str, np.ndarray] | None:
        """Rows of this sample (and the base before it) when interrupts were busy, or None."""
        self.stats["samples"] = self.stats.get("samples", 0) + 1
        now = self.read(ts_ns, host)
        if not now:
            return None
        prev = self._prev
        busy = False
        if prev is not None and ts_ns > prev[0]:
            before = {r["cpu"]: r for r in prev[1]}
            for r in now:
                b = before.get(r["cpu"])
                if b is not None and (r["irq_ns"] + r["softirq_ns"] - b["irq_ns"] - b["softirq_ns"]
                                      >= self.busy_share * (ts_ns - prev[0])):
                    busy = True
                    break
        emit = prev is None or busy or prev[3] or ts_ns - self._written >= self.idle_every_ns
        rows: list[dict] = []
        if emit:
            if busy and prev is not None and not prev[2]:
                rows.extend(prev[1])          # the quiet sample before: the counters' base
            rows.extend(now)
            self._written = ts_ns
        if busy:
            self.stats["busy_samples"] = self.stats.get("busy_samples", 0) + 1
        self._prev = (ts_ns, now, emit, busy)
        if not rows:
            return None
        self.stats["rows"] = self.stats.get("rows", 0) + len(rows)
        cols: dict[str, np.ndarray] = {}
        for name, typ in CPU_IRQ_COLUMNS:
            if typ in _DTYPES:
                cols[name] = np.array([int(r.get(name, 0)) for r in rows], dtype=_DTYPES[typ])  # type: ignore[call-overload]
            else:
                cols[name] = np.array([str(r.get(name, "")) for r in rows], dtype=object)
        return cols
