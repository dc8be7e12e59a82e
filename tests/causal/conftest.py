"""The causal tests' recorder: tests/conftest.py's Capture, flushing every second (the recorder's default) instead of 50 ms.

Why: the recorder writes every non-empty table once per flush, one chDB INSERT each.
On the shared 2-CPU host, with other suites loading it (and system-wide block I/O
and retransmit rows from their work), 20 flushes a second cost the writer more than
real time, its backlog grew without bound and `wait_drained` never returned (still
seen at 250 ms with system-wide block I/O from other suites). At 1 s the writer keeps up; the tests still wait for the drain before querying, so
nothing they assert on depends on the flush period.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Capture, is_root

FLUSH_MS = 1000


@pytest.fixture
def capture(tmp_path: Path, probes_built: None) -> Iterator[Capture]:
    if not is_root():
        pytest.skip("attaching eBPF probes needs root (CI runs as root)")
    c = Capture(tmp_path / "data", flush_ms=FLUSH_MS, drain_s=60.0)
    try:
        yield c
    finally:
        c.stop()


def default_policy() -> dict[str, object]:
    """The probe settings `kprobe record` uses when given no option: thresholds, sums, no watch list."""
    from kprobe.cli import build_parser
    from kprobe.cli.recording import recorder_config

    probes = recorder_config(build_parser().parse_args(["record"]), watching=False).probes
    assert probes.detail == "bounded" and not probes.watching
    return {k: getattr(probes, k) for k in ("filter_on", "detail", "min_offcpu_ns", "min_syscall_ns", "sock_flush_ms",
                                            "min_block_us", "fault_sample_every", "fault_flush_ms", "call_hooks")}


class SystemWide(Capture):
    """`kprobe record`'s default policy, and workloads that are never put on a watch list."""

    def __init__(self, data: Path):
        super().__init__(data, **default_policy())

    def spawn(self, *argv: str, **kw: object) -> subprocess.Popen:
        p = subprocess.Popen(list(argv), stdin=subprocess.PIPE, **kw)  # type: ignore[call-overload]
        assert p.stdin is not None
        p.stdin.write(b"go\n")
        p.stdin.flush()
        return p


@pytest.fixture
def system_wide(tmp_path: Path, probes_built: None) -> Iterator[SystemWide]:
    """The default recording of the whole host, as `kprobe record` runs with no option."""
    if not is_root():
        pytest.skip("attaching eBPF probes needs root (CI runs as root)")
    c = SystemWide(tmp_path / "data")
    try:
        yield c
    finally:
        c.stop()


def needs_two_cpus(why: str) -> None:
    if (os.cpu_count() or 1) < 2:
        pytest.skip(f"needs two CPUs: {why}")


def _evidence_key(ev) -> dict:
    """What the analysis reads, order-free (the store returns rows in any order; memory keeps ts order)."""
    out = {}
    for f in ("offcpu", "syscalls", "blocked_calls"):
        out[f] = sorted(repr(r) for v in getattr(ev, f).values() for r in v)
    for f in ("reclaims", "faults", "block_io", "sock_io", "retrans", "fd_open", "memcg_members", "cpu_irq"):
        out[f] = sorted(map(repr, getattr(ev, f)))
    out["reclaim_totals"] = sorted(map(repr, ev.reclaim_totals or []))
    out["comms"], out["fetched"] = ev.comms, ev.fetched_tgids
    return out


def why_both_ways(store, pid: int, t0: int, t1: int):
    """``why`` on real data, after checking its two evidence paths agree on it.

    fetch_evidence reads the window once and runs the rounds in memory; a window
    too big for that is followed round by round on the store. Both must select
    the same rows, or answers would change with the size of the recording.
    """
    from kprobe.causal.fetch import fetch_evidence, read_window
    from kprobe.causal.model import Interval
    from kprobe.causal.records import Evidence
    from kprobe.causal.why import why

    iv = Interval(pid, t0, t1)
    # A system-wide recording keeps storing rows that overlap a past window (a thread asleep in it
    # wakes later, and its row arrives then): a pair of reads straddling such a flush differs. A
    # real disagreement between the paths persists; one straddling a flush does not.
    for _ in range(3):
        fast, rounds = fetch_evidence(store, iv), fetch_evidence(store, iv, window_limit=0)
        # the window read, the rounds in memory; unless the host was so busy that the window holds
        # more rows than a window read may move (then both paths run round by round)
        assert fast.queries == 1 or read_window(store, Evidence(iv)) is None, fast.queries
        if _evidence_key(fast) == _evidence_key(rounds):
            break
        time.sleep(2.0)
    assert _evidence_key(fast) == _evidence_key(rounds)
    return why(store, pid, t0, t1)
