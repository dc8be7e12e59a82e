"""What a retention pass removes from a time-partitioned store: a plan, decided from the partition list alone.

Rules, each from something that went wrong (issue 18):

* The bucket ``now`` falls in is being written: it is never dropped. When it alone is over the
  size cap, its oldest rows are deleted instead (a *trim*), so the cap holds continuously and not
  only once the bucket rolls over (a 10-minute bucket under pgbench held 16x the cap).
* Partitions more than one bucket ahead of ``now`` cannot hold real data from this host (a corrupt
  row, a client's span dated hours ahead): they go first when anything has to go, and always when
  they are further ahead than the age limit. So one bad timestamp never decides what is kept, and
  future-dated rows do not outlive retention.
* Under the size cap the newest data is kept: buckets are counted newest first, the bucket where
  the running total crosses the cap is trimmed to what fits, everything older is dropped. Without
  trimming, dropping the whole previous bucket made a 30 MB store swing between 3 and 37 MB.
* A trim aims at ``trim_to`` (90 %) of what fits, so a store at its cap is not rewritten every pass.
* Derived tables (sums built from a bucket's rows, such as the timeline's cells) are partitioned by the
  same bucket first: they count towards the cap with their bucket and go with it. A derived
  partition whose bucket has no rows left is dropped: it describes data that is gone.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Part:
    table: str
    bucket: int  # partition value: ts // bucket_ns
    bytes: int
    #: the partition as DROP PARTITION names it, when more than the bucket (a derived table's (bucket, kind))
    expr: str | None = None

    @property
    def derived(self) -> bool:
        return self.expr is not None


@dataclass(frozen=True)
class Trim:
    bucket: int
    keep_fraction: float  # newest share of the bucket's rows to keep (0 < f < 1), per table


@dataclass
class Plan:
    drop: list[Part] = field(default_factory=list)
    trims: list[Trim] = field(default_factory=list)
    future_dropped: int = 0  # partitions dropped because they were dated too far ahead
    bytes_before: int = 0
    bytes_after_estimate: int = 0


def plan(parts: list[Part], now_ns: int, bucket_ns: int, max_age_ns: int | None, max_bytes: int | None,
         trim_to: float = 0.9) -> Plan:
    current = now_ns // bucket_ns
    by_bucket: dict[int, list[Part]] = {}
    for p in parts:
        by_bucket.setdefault(p.bucket, []).append(p)
    size = {b: sum(p.bytes for p in ps) for b, ps in by_bucket.items()}
    out = Plan(bytes_before=sum(size.values()))
    dropped: set[int] = set()

    def drop(b: int, future: bool = False) -> None:
        dropped.add(b)
        out.drop.extend(by_bucket[b])
        out.future_dropped += len(by_bucket[b]) if future else 0

    future = sorted(b for b in by_bucket if b > current + 1)
    for b in future:
        if max_age_ns is not None and b * bucket_ns > now_ns + max_age_ns:
            drop(b, future=True)
    if max_age_ns is not None:
        for b in by_bucket:
            if b not in dropped and b < current and (b + 1) * bucket_ns < now_ns - max_age_ns:
                drop(b)
    total = sum(size[b] for b in by_bucket if b not in dropped)
    if max_bytes is not None and total > max_bytes:
        for b in future:  # implausible first: they are never "the newest data"
            if b not in dropped and total > max_bytes:
                drop(b, future=True)
                total -= size[b]
    if max_bytes is not None and total > max_bytes:
        budget = int(max_bytes * trim_to)
        kept = 0
        for b in sorted((b for b in by_bucket if b not in dropped), reverse=True):
            if kept >= budget and b != current and b != current + 1:
                drop(b)
                total -= size[b]
            elif kept + size[b] > budget:
                fit = max(0, budget - kept)
                if fit == 0 and b != current and b != current + 1:
                    drop(b)
                    total -= size[b]
                else:  # the bucket being written (or the next) is never dropped: keep at least some of it
                    frac = max(fit / size[b], 0.05) if size[b] else 1.0
                    if frac < 1.0:
                        out.trims.append(Trim(b, frac))
                        total -= int(size[b] * (1 - frac))
                    kept += int(size[b] * frac)
            else:
                kept += size[b]
    out.bytes_after_estimate = total
    return out
