"""The ingest's concurrent write rounds are acknowledged strictly in reading order (dataflows/ingest.py).

A recovery snapshot holds the offsets acknowledged so far; acknowledging a later round before an
earlier one is stored would let a crash skip the earlier one's messages."""

from __future__ import annotations

from kprobe.dataflows.ingest import RoundOrder


def test_a_round_finishing_early_waits_for_the_rounds_before_it():
    order = RoundOrder()
    a = order.begin(["m1", "m2"], [11, 12])
    b = order.begin(["m3"], [13])
    c = order.begin(["m4"], [None])  # an undecodable message has no batch id
    assert order.in_flight_ids == {11, 12, 13}
    assert order.finish(c, [None]) == []  # stored, but a and b are not yet
    assert order.finish(b, [13]) == []
    assert 13 not in order.in_flight_ids and 11 in order.in_flight_ids
    assert order.finish(a, [11, 12]) == [["m1", "m2"], ["m3"], ["m4"]]  # all three, oldest first
    assert order.in_flight == {} and order.finished == {} and order.in_flight_ids == set()
    d = order.begin(["m5"], [15])
    assert order.finish(d, [15]) == [["m5"]]
