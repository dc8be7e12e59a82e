"""UTC nanosecond timestamps in and out: ns since the epoch, or ISO-8601 with up to 9 fractional digits."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_ISO = re.compile(r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:?\d{2})?$")


def parse_ts(text: str) -> int:
    """'1764201600000000000' or '2026-11-27T01:02:03.123456789Z' -> UTC ns. Naive ISO means UTC."""
    t = text.strip()
    if t.isdigit():
        return int(t)
    m = _ISO.match(t)
    if not m:
        raise ValueError(f"not a timestamp: {text!r} (use ns since the epoch or ISO-8601, e.g. 2026-11-27T03:47:12.004Z)")
    date, clock, frac, tz = m.groups()
    tz = "+00:00" if tz in (None, "Z") else tz
    base = datetime.fromisoformat(f"{date}T{clock}{tz}")
    ns = (frac or "").ljust(9, "0")
    return int(base.timestamp()) * 1_000_000_000 + int(ns)


def format_ts(ns: int) -> str:
    sec, frac = divmod(int(ns), 1_000_000_000)
    return datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def format_dur(ns: int) -> str:
    ns = int(ns)
    if ns >= 1_000_000_000:
        return f"{ns / 1e9:.3f} s"
    if ns >= 1_000_000:
        return f"{ns / 1e6:.3f} ms"
    if ns >= 1_000:
        return f"{ns / 1e3:.1f} µs"
    return f"{ns} ns"
