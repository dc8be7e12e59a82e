"""The kernel's tick rate (CONFIG_HZ), read from its build configuration when one is readable.

Why: the probes fold socket I/O per interval, and counting that interval in jiffies costs a plain
load where a clock read costs ~90 ns on a VM. The rate is not exposed at run time (USER_HZ is
always 100), and a libbpf ``__kconfig`` extern would make the whole object fail to load on hosts
without /boot/config-* or /proc/config.gz (common in containers), so the agent looks it up and
hands the probes the interval in jiffies, or 0 to make them use the clock.
"""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

_HZ = re.compile(rb"^CONFIG_HZ=(\d+)$", re.M)


def kernel_hz(candidates: tuple[Path, ...] | None = None) -> int:
    """CONFIG_HZ, or 0 when no configuration is readable."""
    if candidates is None:
        candidates = (Path(f"/boot/config-{os.uname().release}"), Path("/proc/config.gz"))
    for path in candidates:
        try:
            raw = path.read_bytes()
            text = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        except (OSError, EOFError, gzip.BadGzipFile):
            continue
        m = _HZ.search(text)
        if m:
            return int(m.group(1))
    return 0


def interval_jiffies(ms: int, hz: int) -> int:
    """An interval of ``ms`` milliseconds in whole jiffies, rounded up (0 when the rate is unknown)."""
    return 0 if hz <= 0 or ms <= 0 else (ms * hz + 999) // 1000
