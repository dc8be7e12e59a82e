"""Cut-off windows and business-day calendars against dates whose answer is known."""

from __future__ import annotations

from datetime import date

import pytest

from kprobe.finance.calendars import CALENDARS, easter
from kprobe.finance.windows import PRESETS, preset, utc_ns


def test_easter_known_years() -> None:
    assert [easter(y) for y in (2024, 2025, 2026, 2027, 2038)] == [
        date(2024, 3, 31), date(2025, 4, 20), date(2026, 4, 5), date(2027, 3, 28), date(2038, 4, 25)]


def test_federal_reserve_2026_holidays() -> None:
    """frbservices.org holiday schedule for 2026 (July 4 is a Saturday: the Reserve Banks stay open on the 3rd)."""
    assert sorted(CALENDARS["us-federal-reserve"].closed(2026)) == [
        date(2026, 1, 1), date(2026, 1, 19), date(2026, 2, 16), date(2026, 5, 25), date(2026, 6, 19),
        date(2026, 9, 7), date(2026, 10, 12), date(2026, 11, 11), date(2026, 11, 26), date(2026, 12, 25)]


def test_england_wales_substitute_days() -> None:
    cal = CALENDARS["england-wales"]
    assert date(2026, 12, 28) in cal.closed(2026)  # Boxing Day on a Saturday -> Monday 28th
    assert {date(2027, 12, 27), date(2027, 12, 28)} <= cal.closed(2027)  # both on the weekend
    assert cal.next_business_day(date(2026, 12, 24)) == date(2026, 12, 29)


def test_fedwire_cutoff_in_winter_and_summer_time() -> None:
    w = PRESETS["fedwire"]
    winter = w.locate(utc_ns("2026-12-07T22:00:00Z"))
    assert winter.cutoff_ns == utc_ns("2026-12-07T23:00:00Z") and winter.slack_ns == 3600 * 10**9
    summer = w.locate(utc_ns("2026-07-07T21:00:00Z"))
    assert summer.cutoff_ns == utc_ns("2026-07-07T22:00:00Z")  # 18:00 EDT


def test_missed_cutoff_and_value_date_roll() -> None:
    w = PRESETS["fedwire"]
    p = w.locate(utc_ns("2026-12-07T22:59:59.250Z"), utc_ns("2026-12-07T23:00:00.050Z"))
    assert p.missed and p.overrun_ns == 50_000_000 and p.slack_ns == 750_000_000
    assert p.value_date == date(2026, 12, 7)
    after = w.locate(utc_ns("2026-12-07T23:00:00.050Z"))
    assert after.value_date == date(2026, 12, 8) and not after.missed
    friday = w.locate(utc_ns("2026-12-11T23:30:00Z"))
    assert friday.value_date == date(2026, 12, 14)
    christmas_eve = w.locate(utc_ns("2026-12-24T23:30:00Z"))
    assert christmas_eve.value_date == date(2026, 12, 28)


def test_same_day_ach_picks_the_next_window() -> None:
    w = PRESETS["same-day-ach"]
    assert w.locate(utc_ns("2026-12-07T14:00:00Z")).cutoff_name == "window 1"  # 09:00 ET
    assert w.locate(utc_ns("2026-12-07T16:00:00Z")).cutoff_name == "window 2"  # 11:00 ET
    third = w.locate(utc_ns("2026-12-07T21:00:00Z"))  # 16:00 ET
    assert third.cutoff_name == "window 3" and third.slack_ns == 45 * 60 * 10**9
    late = w.locate(utc_ns("2026-12-07T22:00:00Z"))  # 17:00 ET: tomorrow's first window
    assert late.cutoff_name == "window 1" and late.value_date == date(2026, 12, 8)


@pytest.mark.parametrize("name,instant,cutoff", [
    ("chaps", "2026-12-07T12:00:00Z", "2026-12-07T17:40:00Z"),
    ("chaps", "2026-07-07T12:00:00Z", "2026-07-07T16:40:00Z"),  # BST
    ("t2", "2026-12-07T12:00:00Z", "2026-12-07T16:00:00Z"),
    ("t2", "2026-04-03T12:00:00Z", "2026-04-07T15:00:00Z"),  # Good Friday, Easter Monday closed; CEST
    ("cls", "2026-12-07T12:00:00Z", "2026-12-07T23:00:00Z"),  # midnight CET starting the 8th
])
def test_presets(name, instant, cutoff) -> None:
    assert preset(name).locate(utc_ns(instant)).cutoff_ns == utc_ns(cutoff)


def test_unknown_preset_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown window preset 'fedwir'.*fedwire"):
        preset("fedwir")
