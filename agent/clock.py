"""Kernel timestamps (CLOCK_MONOTONIC, what bpf_ktime_get_ns returns) -> UTC ns.

Method: offset sampling. Read MONOTONIC, REALTIME, MONOTONIC back to back many
times and keep the tightest bracket; the offset is REALTIME minus the bracket's
midpoint and the error bound is half its width (typically < 1 µs here). The agent
re-samples every flush so NTP slews and steps are followed; each batch is
converted with the offset sampled just before it was drained.

Why not bpf_ktime_get_tai_ns: TAI-UTC is only right if something (chrony/ntpd)
told the kernel the leap-second offset; on most hosts it is 0 and TAI would be
silently 37 s off. Offset sampling has no such dependency.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

METHOD = "offset-sampling(CLOCK_MONOTONIC->CLOCK_REALTIME)"


@dataclass(frozen=True)
class ClockSync:
    offset_ns: int   # add to a kernel monotonic timestamp to get UTC ns
    error_ns: int    # half the width of the best bracket
    sampled_mono_ns: int
    method: str = METHOD

    def to_utc(self, mono_ns: int) -> int:
        return mono_ns + self.offset_ns


def sample(tries: int = 64) -> ClockSync:
    mono, real = time.CLOCK_MONOTONIC, time.CLOCK_REALTIME
    get = time.clock_gettime_ns
    best_width, best_offset, best_mid = 1 << 62, 0, 0
    for _ in range(tries):
        m1 = get(mono)
        r = get(real)
        m2 = get(mono)
        width = m2 - m1
        if width < best_width:
            mid = m1 + width // 2
            best_width, best_offset, best_mid = width, r - mid, mid
    return ClockSync(best_offset, (best_width + 1) // 2, best_mid)
