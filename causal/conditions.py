"""Row conditions written once, read two ways: as SQL for the store and as a predicate for rows in memory.

The evidence reads (causal/fetch.py) select the same rows whether a round runs on the store or on
a window already read (or a dataflow's buffer): each condition is built from the same numbers in
both forms, side by side. Only integers (after ``int()``) and constant names reach the SQL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Cond:
    """One row condition twice: ``sql`` for a WHERE clause, ``keep`` for a record in memory."""

    sql: str
    keep: Callable[[Any], bool]


def all_of(*cs: Cond) -> Cond:
    ks = [c.keep for c in cs]
    if len(ks) == 2:       # the usual shapes without a generator per row (rounds test thousands of rows)
        k1, k2 = ks
        keep: Callable[[Any], bool] = lambda r: k1(r) and k2(r)     # noqa: E731
    elif len(ks) == 3:
        k1, k2, k3 = ks
        keep = lambda r: k1(r) and k2(r) and k3(r)     # noqa: E731
    else:
        keep = lambda r: all(k(r) for k in ks)     # noqa: E731
    return Cond(" AND ".join(f"({c.sql})" for c in cs), keep)


def any_of(*cs: Cond) -> Cond:
    ks = [c.keep for c in cs]
    if len(ks) == 2:
        k1, k2 = ks
        keep: Callable[[Any], bool] = lambda r: k1(r) or k2(r)     # noqa: E731
    else:
        keep = lambda r: any(k(r) for k in ks)     # noqa: E731
    return Cond(" OR ".join(f"({c.sql})" for c in cs), keep)


def overlap(lo: int, hi: int, lookback: int | None = None) -> Cond:
    """Rows whose [ts, end_ts] overlaps [lo, hi]; ``lookback`` bounds ts from below so a ts-ordered key prunes."""
    lo, hi = int(lo), int(hi)
    if lookback is None:
        return Cond(f"end_ts >= {lo} AND ts <= {hi}", lambda r: r.end_ts >= lo and r.ts <= hi)
    first = lo - int(lookback)
    return Cond(f"end_ts >= {lo} AND ts <= {hi} AND ts >= {first}",
                lambda r: r.end_ts >= lo and first <= r.ts <= hi)


def between(lo: int, hi: int) -> Cond:
    lo, hi = int(lo), int(hi)
    return Cond(f"ts >= {lo} AND ts <= {hi}", lambda r: lo <= r.ts <= hi)


def tgid_list(tgids: set[int]) -> str:
    return ", ".join(str(int(t)) for t in sorted(tgids))


def tgids_in(tgids: set[int]) -> Cond:
    if len(tgids) == 1:
        (tg,) = tgids
        return Cond(f"tgid = {int(tg)}", lambda r: r.tgid == tg)
    s = frozenset(int(t) for t in tgids)
    return Cond(f"tgid IN ({tgid_list(set(s))})", lambda r: r.tgid in s)


def calls_in(names: tuple[str, ...]) -> Cond:
    """Syscalls by name: the names are the analysis's own constants, never user input."""
    s = frozenset(names)
    return Cond(f"syscall IN ({', '.join(repr(c) for c in sorted(s))})", lambda r: r.syscall in s)
