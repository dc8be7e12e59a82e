"""The recorder's own cost, sampled from /proc so `kprobe stats` can show it.

An always-on recorder is judged by what it takes from the host: CPU over a recent
window (not since start, which start-up dominates), rows per second, and resident
memory split into heap (anonymous) and mapped code (file pages of libraries, which
the kernel can drop and re-read: chDB's library alone is ~0.5 GB on disk).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def _status_kb() -> dict[str, int]:
    out: dict[str, int] = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "RssAnon:", "RssFile:", "VmHWM:")):
                k, v = line.split(":", 1)
                out[k] = int(v.split()[0])
    return out


@dataclass
class SelfCost:
    """CPU and rows over a sliding window of at least ``window_s``; memory as of the last sample."""

    window_s: float = 10.0
    _marks: list[tuple[float, float, int]] = field(default_factory=list)   # (monotonic, cpu s, rows)

    def sample(self, rows_total: int) -> dict[str, float]:
        now = time.monotonic()
        self._marks.append((now, _cpu_s(), rows_total))
        while len(self._marks) > 2 and now - self._marks[1][0] >= self.window_s:
            self._marks.pop(0)
        t0, c0, r0 = self._marks[0]
        span = max(now - t0, 1e-9)
        mem = _status_kb()
        return {
            "window_s": round(now - t0, 1),
            "cpu_pct": round(100 * (self._marks[-1][1] - c0) / span, 2) if now > t0 else 0.0,
            "rows_per_s": round((rows_total - r0) / span, 1) if now > t0 else 0.0,
            "rss_mb": mem.get("VmRSS", 0) / 1024,
            "rss_anon_mb": mem.get("RssAnon", 0) / 1024,
            "rss_file_mb": mem.get("RssFile", 0) / 1024,
            "rss_peak_mb": mem.get("VmHWM", 0) / 1024,
        }
