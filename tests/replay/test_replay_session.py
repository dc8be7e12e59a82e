"""The state of a replay run is declared in one place (replay/session.py), and only there."""

from __future__ import annotations

import dataclasses

import pytest

from kprobe.replay.log import ProcessLog
from kprobe.replay.order import ThreadOrder
from kprobe.replay.session import Prepared, ReplayResult, Session


def _session() -> Session:
    log = ProcessLog(tgid=1, events=[], exec_ns=0, clock_offset_ns=0, replayable_until=0, problem="", meta={})
    prep = Prepared([], {}, {}, [], {}, {}, frozenset(), {-1: 1 << 62}, None, {}, None)  # type: ignore[arg-type]
    return Session(log, True, [], None, prep, {}, None, ReplayResult("identical", 0, 0), ThreadOrder([]))


def test_a_field_not_declared_cannot_be_created_on_the_fly():
    s = _session()
    with pytest.raises(AttributeError):
        s.rdtsc_cont = 1  # type: ignore[attr-defined]  # a typo of rdtsc_count
    s.rdtsc_count += 1
    assert s.rdtsc_count == 1


def test_every_run_starts_from_the_same_declared_state():
    a, b = _session(), _session()
    for f in dataclasses.fields(Session):
        if f.name not in ("log", "prep", "res", "order"):
            assert getattr(a, f.name) == getattr(b, f.name), f.name
    a.emulated.add(7)
    assert b.emulated == {0, 1, 2}  # no state shared between runs
    assert a.consumed is a.order.consumed


def test_divergences_are_capped_and_the_first_decides_the_outcome():
    s = _session()
    for i in range(80):
        s.diverge(i, 1, "bytes", "a", "b")
    assert s.res.outcome == "diverged" and len(s.res.divergences) == 50
    assert s.unsupported("why") == "abort" and s.res.outcome == "unsupported"
