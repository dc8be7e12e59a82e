"""Span times are the client's word: keep them inside a window around the receiver's clock.

A client (buggy, skewed or hostile) can date a span in 1970 or in 2090. The store partitions spans
by time, so one request could create many partitions, and a span dated ahead would outlive
retention. Times outside ``[now - past_s, now + future_s]`` are moved to the window's edge (the
span keeps its place in the store and its order relative to others) and counted
(``spans_time_clamped`` in `kprobe stats`); the duration is recomputed from the clamped times.
"""

from __future__ import annotations

from dataclasses import dataclass

from .otlp_decode import SpanBatch


@dataclass(frozen=True)
class ClockWindow:
    past_s: float = 24 * 3600.0  # an SDK's retry queue or a batch exporter can hold spans for a while
    future_s: float = 300.0  # clock skew between hosts; more is not a real span from now

    def clamp(self, batch: SpanBatch, now_ns: int) -> int:
        """Clamp in place; returns how many spans were changed."""
        lo, hi = now_ns - int(self.past_s * 1e9), now_ns + int(self.future_s * 1e9)
        changed = 0
        ts, end, dur = batch.ts_ns, batch.end_ns, batch.duration_ns
        for i in range(len(ts)):
            s, e = ts[i], end[i]
            if lo <= s <= hi and lo <= e <= hi:
                continue
            s2, e2 = min(max(s, lo), hi), min(max(e, lo), hi)
            ts[i], end[i], dur[i] = s2, e2, e2 - s2 if e2 > s2 else 0
            changed += 1
        return changed
