"""Reject rows whose times are impossible before they reach a store or a topic.

One bad row is not harmless: a timestamp hours in the future becomes a partition
of its own that retention then keeps while it drops live data, and a negative
duration (end before start, stored unsigned) ranks first in every "slowest" list.
The probes write every field of every record; this is the agent's second line,
so that a kernel or probe bug is a counted rejection (`kprobe stats`), not a row.
"""

from __future__ import annotations

import time

import numpy as np

# (start, end) time fields of each record layout, in bpf_ktime ns; either may be 0 ("unknown")
_PAIRS = (("off_ns", "on_ns"), ("start_ns", "end_ns"), ("enter_ns", "exit_ns"), ("issue_ns", "done_ns"))
_STAMPS = ("ts_ns", "off_ns", "on_ns", "start_ns", "end_ns", "enter_ns", "exit_ns", "done_ns")
FUTURE_SLACK_NS = 60_000_000_000      # a row stamped later than this after its drain is impossible
PID_MAX = 1 << 22                      # the kernel's PID_MAX_LIMIT on 64-bit


def impossible(records: np.ndarray, drained_mono_ns: int | None = None) -> np.ndarray:
    """Boolean mask of the rows no kernel could have produced.

    Checked: every stamp set and not after the drain (plus FUTURE_SLACK_NS); each
    end not before its start; a wake-up inside its off-CPU interval; thread ids
    within the kernel's pid range.
    """
    names = records.dtype.names or ()
    bad = np.zeros(len(records), dtype=bool)
    if not len(records):
        return bad
    now = time.monotonic_ns() if drained_mono_ns is None else drained_mono_ns
    limit = np.uint64(now + FUTURE_SLACK_NS)
    for f in _STAMPS:
        if f in names:
            bad |= records[f] > limit
    for f in ("ts_ns", "off_ns", "on_ns", "exit_ns", "done_ns", "end_ns"):
        if f in names:
            bad |= records[f] == 0
    for a, b in _PAIRS:
        if a in names and b in names:
            start, end = records[a], records[b]
            bad |= (start != 0) & (end != 0) & (end < start)
    if "wake_ns" in names and "off_ns" in names:
        w = records["wake_ns"]
        bad |= (w != 0) & ((w < records["off_ns"]) | (w > records["on_ns"]))
    for f in ("tgid", "tid", "waker_tgid", "waker_tid", "preemptor_tgid", "displaced_tgid"):
        if f in names:
            bad |= records[f] >= PID_MAX
    return bad
