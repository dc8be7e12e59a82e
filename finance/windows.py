"""Settlement and clearing windows: timezone-aware cut-offs on a business-day calendar.

A :class:`Window` is one or more cut-off times a day, in the system's own time zone, on the
business days of its calendar. For an instant, :meth:`Window.locate` answers the questions an
incident needs: which cut-off the event is racing (the first one still ahead), the value date it
settles on if it makes it, how much slack is left, and, given when the event finished, whether it
missed that cut-off and by how much.

Presets (times as published by each operator; check them against the current timetable before
relying on them for anything but observability - operators change hours, and a deployment can
override any field in the domain map):

* ``fedwire`` - Fedwire Funds Service, customer transfers (CTR) cut-off 18:00 ET; the business
  day runs 21:00 ET (previous calendar day) to 19:00 ET. Source: Federal Reserve Financial
  Services, "Fedwire Funds Service operating hours",
  https://www.frbservices.org/resources/financial-services/wires/operating-hours.html
* ``fedwire-bank`` - the same service's bank (interbank) transfer cut-off, 19:00 ET (same source).
* ``chaps`` - CHAPS customer payments cut-off 17:40 UK time (interbank 18:00), settlement day
  from 06:00. Source: Bank of England, "RTGS and CHAPS operating timetable",
  https://www.bankofengland.co.uk/payment-and-settlement/chaps
* ``t2`` - TARGET (T2 RTGS) customer payments cut-off 17:00 CET, interbank 18:00 CET. Source:
  European Central Bank, "T2 - the operating day",
  https://www.ecb.europa.eu/paym/target/t2/html/index.en.html
* ``cls`` - CLS settlement: instructions for a value date by 00:00 CET of that date, settlement
  07:00-09:00 CET. Source: CLS Group, "CLSSettlement",
  https://www.cls-group.com/products/settlement/clssettlement/
* ``same-day-ach`` - FedACH Same Day ACH submission deadlines 10:30, 14:45 and 16:45 ET
  (settling 13:00, 17:00, 18:00 ET). Sources: Nacha, "Same Day ACH Resource Center",
  https://www.nacha.org/content/same-day-ach-resource-center and FedACH processing schedule,
  https://www.frbservices.org/resources/financial-services/fedach/processing-schedule.html
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

from .calendars import CALENDARS, Calendar

__all__ = ["Window", "Placement", "PRESETS", "preset"]


@dataclass(frozen=True)
class Placement:
    """Where an event falls relative to a window."""

    window: str
    cutoff_name: str  #: which cut-off of the day ("customer", "window 2"...)
    value_date: date  #: the business day it settles on if the cut-off is met
    cutoff_ns: int  #: the cut-off, UTC ns
    slack_ns: int  #: cut-off minus the event's start (negative: it started too late)
    missed: bool = False  #: the event ended after the cut-off
    overrun_ns: int = 0  #: how far past the cut-off it ended

    def as_dict(self) -> dict[str, object]:
        return {"window": self.window, "cutoff": self.cutoff_name, "value_date": self.value_date.isoformat(),
                "cutoff_ns": self.cutoff_ns, "slack_ns": self.slack_ns, "missed": self.missed,
                "overrun_ns": self.overrun_ns}


@dataclass(frozen=True)
class Window:
    name: str
    timezone: str
    calendar: Calendar
    cutoffs: tuple[tuple[str, time], ...]  #: (name, local time), in order through the day

    def __post_init__(self) -> None:
        ZoneInfo(self.timezone)  # raises for an unknown zone
        if not self.cutoffs:
            raise ValueError(f"window {self.name!r}: at least one cut-off is needed")
        times = [t for _, t in self.cutoffs]
        if times != sorted(times):
            raise ValueError(f"window {self.name!r}: cut-offs must be in order through the day")

    def _cutoff_ns(self, d: date, t: time) -> int:
        local = datetime.combine(d, t, tzinfo=ZoneInfo(self.timezone))
        return int(local.astimezone(UTC).timestamp()) * 1_000_000_000 + local.microsecond * 1000

    def locate(self, start_ns: int, end_ns: int | None = None) -> Placement:
        """The cut-off an event that started at ``start_ns`` (UTC ns) is racing: the first cut-off
        at or after it on a business day. With ``end_ns``, whether it ended past that cut-off."""
        tz = ZoneInfo(self.timezone)
        local = datetime.fromtimestamp(start_ns / 1e9, tz=UTC).astimezone(tz)
        day = self.calendar.next_business_day(local.date(), include=True)
        chosen: tuple[str, date, int] | None = None
        for _ in range(2):
            for name, t in self.cutoffs:
                ns = self._cutoff_ns(day, t)
                if ns >= start_ns:
                    chosen = (name, day, ns)
                    break
            if chosen is not None:
                break
            day = self.calendar.next_business_day(day)
        assert chosen is not None
        name, value_date, cutoff = chosen
        missed = end_ns is not None and end_ns > cutoff
        return Placement(self.name, name, value_date, cutoff, cutoff - start_ns, missed,
                         max(0, (end_ns or 0) - cutoff) if missed else 0)

    def place(self, anchor_ns: int, start_ns: int, end_ns: int) -> Placement:
        """An event of a flow that began at ``anchor_ns``: it races the cut-off the flow was racing
        (a ledger fsync that starts after the cut-off has missed it, it is not early for tomorrow's)."""
        p = self.locate(anchor_ns)
        missed = end_ns > p.cutoff_ns
        return Placement(self.name, p.cutoff_name, p.value_date, p.cutoff_ns, p.cutoff_ns - start_ns, missed,
                         end_ns - p.cutoff_ns if missed else 0)

    def with_cutoffs(self, cutoffs: tuple[tuple[str, time], ...], name: str | None = None) -> Window:
        return Window(name or self.name, self.timezone, self.calendar, cutoffs)


def _w(name: str, tz: str, cal: str, *cutoffs: tuple[str, str]) -> Window:
    return Window(name, tz, CALENDARS[cal], tuple((n, time.fromisoformat(t)) for n, t in cutoffs))


#: The presets, each citing its public source in the module docstring above.
PRESETS: dict[str, Window] = {
    "fedwire": _w("fedwire", "America/New_York", "us-federal-reserve", ("customer transfers", "18:00")),
    "fedwire-bank": _w("fedwire-bank", "America/New_York", "us-federal-reserve", ("bank transfers", "19:00")),
    "chaps": _w("chaps", "Europe/London", "england-wales", ("customer payments", "17:40")),
    "chaps-interbank": _w("chaps-interbank", "Europe/London", "england-wales", ("interbank", "18:00")),
    "t2": _w("t2", "Europe/Berlin", "target", ("customer payments", "17:00")),
    "t2-interbank": _w("t2-interbank", "Europe/Berlin", "target", ("interbank", "18:00")),
    "cls": _w("cls", "Europe/Paris", "cls", ("instruction deadline", "00:00")),
    "same-day-ach": _w("same-day-ach", "America/New_York", "us-federal-reserve",
                       ("window 1", "10:30"), ("window 2", "14:45"), ("window 3", "16:45")),
}


def preset(name: str) -> Window:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown window preset {name!r}; presets: {', '.join(sorted(PRESETS))}") from None


def utc_ns(text: str) -> int:
    """ISO 8601 with an offset -> UTC ns (tests and the CLI)."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        raise ValueError(f"{text!r}: a time zone offset is required")
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000

