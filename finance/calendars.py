"""Business-day calendars: which dates a payment system settles on, by rule, not by list.

Why rules: a list of holiday dates goes stale every January and is wrong for any year nobody
typed in. The public rules of each system are short (fixed dates, "third Monday of January",
Easter-relative days, weekend substitution) and give every year. A calendar can also take extra
closing dates (``holidays``) and exclude dates (``open_days``) from configuration, for a one-off
closure or a system's announced exception.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache

__all__ = ["Calendar", "CALENDARS", "easter"]

MON, TUE, WED, THU, FRI, SAT, SUN = range(7)


def easter(year: int) -> date:
    """Western (Gregorian) Easter Sunday: the anonymous Gregorian algorithm (Meeus/Jones/Butcher)."""
    a = year % 19
    b, c = divmod(year, 100)
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    L = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * L) // 451
    month, day = divmod(h + L - 7 * m + 114, 31)
    return date(year, month, day + 1)


def _nth(year: int, month: int, weekday: int, n: int) -> date:
    """The n-th ``weekday`` of the month (n = -1: the last)."""
    if n > 0:
        first = date(year, month, 1)
        return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))
    nxt = date(year + (month == 12), month % 12 + 1, 1)
    last = nxt - timedelta(days=1)
    return last - timedelta(days=(last.weekday() - weekday) % 7)


def _us_federal_reserve(year: int) -> set[date]:
    """Federal Reserve Bank holidays (12 CFR / 5 U.S.C. 6103 dates). A holiday on a Sunday is
    observed the Monday after; on a Saturday the Reserve Banks stay open the Friday before
    (https://www.frbservices.org/about/holiday-schedules)."""
    fixed = [date(year, 1, 1), date(year, 6, 19), date(year, 7, 4), date(year, 11, 11), date(year, 12, 25)]
    out = {d + timedelta(days=1) if d.weekday() == SUN else d for d in fixed if d.weekday() != SAT}
    out |= {_nth(year, 1, MON, 3), _nth(year, 2, MON, 3), _nth(year, 5, MON, -1), _nth(year, 9, MON, 1),
            _nth(year, 10, MON, 2), _nth(year, 11, THU, 4)}
    return out


def _substitute(days: list[date]) -> set[date]:
    """UK-style substitution: a holiday on a weekend moves to the next weekday not already a holiday."""
    out: set[date] = set()
    for d in sorted(days):
        while d.weekday() >= SAT or d in out:
            d += timedelta(days=1)
        out.add(d)
    return out


def _england_wales(year: int) -> set[date]:
    """Bank holidays in England and Wales (Banking and Financial Dealings Act 1971 and the annual
    proclamations, https://www.gov.uk/bank-holidays): CHAPS is closed on these. One-off extra
    days (a coronation, a jubilee) go in the calendar's ``holidays`` in configuration."""
    e = easter(year)
    out = _substitute([date(year, 1, 1)])
    out |= {e - timedelta(days=2), e + timedelta(days=1), _nth(year, 5, MON, 1), _nth(year, 5, MON, -1),
            _nth(year, 8, MON, -1)}
    if year == 2020:
        out.discard(_nth(year, 5, MON, 1))
        out.add(date(2020, 5, 8))  # VE day moved the early May holiday
    out |= _substitute([date(year, 12, 25), date(year, 12, 26)])
    return out


def _target(year: int) -> set[date]:
    """TARGET (T2) closing days: New Year's Day, Good Friday, Easter Monday, 1 May, 25 and 26
    December (ECB, https://www.ecb.europa.eu/paym/target/t2/html/index.en.html). No substitution."""
    e = easter(year)
    return {date(year, 1, 1), e - timedelta(days=2), e + timedelta(days=1), date(year, 5, 1),
            date(year, 12, 25), date(year, 12, 26)}


def _cls(year: int) -> set[date]:
    """CLS settles on weekdays except 1 January and 25 December; per-currency closures only take
    that currency out of the day (https://www.cls-group.com/products/settlement/clssettlement/)."""
    return {date(year, 1, 1), date(year, 12, 25)}


def _none(year: int) -> set[date]:
    return set()


@dataclass(frozen=True)
class Calendar:
    """Weekdays minus rule-based and configured holidays."""

    name: str
    rule: Callable[[int], set[date]] = _none
    weekend: frozenset[int] = frozenset({SAT, SUN})
    holidays: frozenset[date] = frozenset()
    open_days: frozenset[date] = frozenset()
    _cache: dict[int, frozenset[date]] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def closed(self, year: int) -> frozenset[date]:
        got = self._cache.get(year)
        if got is None:
            got = self._cache[year] = frozenset(self.rule(year)) | frozenset(d for d in self.holidays if d.year == year)
        return got

    def is_business_day(self, d: date) -> bool:
        if d in self.open_days:
            return True
        return d.weekday() not in self.weekend and d not in self.closed(d.year)

    def next_business_day(self, d: date, include: bool = False) -> date:
        """The first business day after ``d`` (or ``d`` itself with ``include``)."""
        if not include:
            d += timedelta(days=1)
        for _ in range(366):
            if self.is_business_day(d):
                return d
            d += timedelta(days=1)
        raise ValueError(f"calendar {self.name!r} has no business day within a year of {d}")

    def with_extra(self, holidays: Iterable[date] = (), open_days: Iterable[date] = (),
                   weekend: Iterable[int] | None = None, name: str | None = None) -> Calendar:
        return Calendar(name or self.name, self.rule, frozenset(weekend) if weekend is not None else self.weekend,
                        self.holidays | frozenset(holidays), self.open_days | frozenset(open_days))


@lru_cache(maxsize=1)
def _builtins() -> dict[str, Calendar]:
    return {
        "us-federal-reserve": Calendar("us-federal-reserve", _us_federal_reserve),
        "england-wales": Calendar("england-wales", _england_wales),
        "target": Calendar("target", _target),
        "cls": Calendar("cls", _cls),
        "weekdays": Calendar("weekdays"),
    }


CALENDARS = _builtins()
