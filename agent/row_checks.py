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
    bad = np.zeros(len(records), dtype=bool)
    for mask in failed_checks(records, drained_mono_ns).values():
        bad |= mask
    return bad


def failed_checks(records: np.ndarray, drained_mono_ns: int | None = None) -> dict[str, np.ndarray]:
    """Per check, the rows that fail it: the log names the check and a sample row, so a probe bug
    reported from the field says which field was wrong, not only that a row was dropped."""
    names = records.dtype.names or ()
    out: dict[str, np.ndarray] = {}
    if not len(records):
        return out
    now = time.monotonic_ns() if drained_mono_ns is None else drained_mono_ns
    limit = np.uint64(now + FUTURE_SLACK_NS)
    for f in _STAMPS:
        if f in names:
            out[f"{f} after the drain"] = records[f] > limit
    for f in ("ts_ns", "off_ns", "on_ns", "exit_ns", "done_ns", "end_ns"):
        if f in names:
            out[f"{f} unset"] = records[f] == 0
    for a, b in _PAIRS:
        if a in names and b in names:
            start, end = records[a], records[b]
            out[f"{b} before {a}"] = (start != 0) & (end != 0) & (end < start)
    if "wake_ns" in names and "off_ns" in names:
        w = records["wake_ns"]
        out["wake_ns outside off_ns..on_ns"] = (w != 0) & ((w < records["off_ns"]) | (w > records["on_ns"]))
    for f in ("tgid", "tid", "waker_tgid", "waker_tid", "preemptor_tgid", "displaced_tgid"):
        if f in names:
            out[f"{f} beyond pid_max"] = records[f] >= PID_MAX
    return {k: m for k, m in out.items() if m.any()}


def sample(records: np.ndarray, drained_mono_ns: int | None = None) -> str:
    """The checks that failed and the first failing row's fields, for the warning log."""
    checks = failed_checks(records, drained_mono_ns)
    if not checks:
        return ""
    first = min(int(np.argmax(m)) for m in checks.values())
    row = records[first]
    fields = ", ".join(f"{n}={row[n]!r}" for n in records.dtype.names or () if row[n].dtype.kind in "iu")
    return f"{'; '.join(sorted(checks))} (first: {fields})"
