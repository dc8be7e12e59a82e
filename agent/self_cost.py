"""The recorder's own cost, sampled from /proc so `kprobe stats` can show it.

An always-on recorder is judged by what it takes from the host: CPU over a recent
window (not since start, which start-up dominates), rows per second, and resident
memory split into heap (anonymous) and mapped code (file pages of libraries, which
the kernel can drop and re-read: chDB's library alone is ~0.5 GB on disk). The finer split
(engine code, other libraries, BPF rings, heap, stacks; agent/mem_breakdown.py) reads
/proc/self/smaps: the kernel walks the page tables of every mapping, 15-80 ms of CPU for the
recorder's ~1000 (chDB's library alone maps ~0.5 GB), so it is taken at start and refreshed every
``breakdown_s`` (5 min) only: every 30 s it was ~0.3 % of a core, a fifth of the recorder's budget.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from kprobe.agent import mem_breakdown

log = logging.getLogger(__name__)


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system


@dataclass
class SelfCost:
    """CPU and rows over a sliding window of at least ``window_s``; memory as of the last sample."""

    window_s: float = 10.0
    breakdown_s: float = 300.0
    _marks: list[tuple[float, float, int]] = field(default_factory=list)   # (monotonic, cpu s, rows)
    _breakdown: dict[str, float] = field(default_factory=dict)
    _breakdown_at: float = float("-inf")

    def sample(self, rows_total: int, breakdown: bool = False) -> dict[str, Any]:
        """CPU and rows over the window, memory now; the smaps split when due or ``breakdown``."""
        now = time.monotonic()
        self._marks.append((now, _cpu_s(), rows_total))
        while len(self._marks) > 2 and now - self._marks[1][0] >= self.window_s:
            self._marks.pop(0)
        t0, c0, r0 = self._marks[0]
        span = max(now - t0, 1e-9)
        mem = mem_breakdown.status()
        if breakdown or now - self._breakdown_at >= self.breakdown_s:
            self._breakdown_at = now
            try:
                bd = mem_breakdown.breakdown()
            except OSError as e:
                log.debug("cannot read the memory breakdown: %s", e)
            else:
                self._breakdown = {"engine_code_mb": round(bd.chdb_code_kb / 1024, 1),
                                   "other_code_mb": round(bd.other_code_kb / 1024, 1),
                                   "data_files_mb": round(bd.data_files_kb / 1024, 1),
                                   "rings_mb": round(bd.rings_kb / 1024, 1), "heap_mb": round(bd.heap_kb / 1024, 1),
                                   "stacks_mb": round(bd.stacks_kb / 1024, 1),
                                   "anon_other_mb": round(bd.anon_other_kb / 1024, 1), "threads": bd.threads,
                                   "age_s": 0.0}
        return {
            "window_s": round(now - t0, 1),
            "cpu_pct": round(100 * (self._marks[-1][1] - c0) / span, 2) if now > t0 else 0.0,
            "rows_per_s": round((rows_total - r0) / span, 1) if now > t0 else 0.0,
            "rss_mb": mem.get("VmRSS", 0) / 1024,
            "rss_anon_mb": mem.get("RssAnon", 0) / 1024,
            "rss_file_mb": mem.get("RssFile", 0) / 1024,
            "rss_shmem_mb": mem.get("RssShmem", 0) / 1024,
            "rss_peak_mb": mem.get("VmHWM", 0) / 1024,
            # the smaps split as of its last refresh (age_s ago)
            **({"memory": {**self._breakdown, "age_s": round(now - self._breakdown_at, 1)}} if self._breakdown else {}),
        }
