"""Shared by the replay tests: one recorded run of a program that needs no peer."""

from __future__ import annotations

from pathlib import Path


def record_run(session: Path, argv: list[str], time_reads: str = "vdso"):
    """Record ``argv`` from exec to exit (it must exit 0) with the eBPF replay recorder; returns its log.
    ``time_reads``: how its vDSO clock reads are recorded (ReplayRecorder: "vdso" or "uprobes")."""
    from kprobe.replay import log as rlog
    from kprobe.replay.record import ReplayRecorder

    rec = ReplayRecorder(session, time_reads=time_reads)
    try:
        p = rec.start(argv)
        assert p.wait() == 0
    finally:
        rec.stop()
    return rlog.load(session, p.pid)
