"""Clock reads answered inside the tracee (replay/intracee.py, the table in replay/fastpath.c) give
exactly the answers the trapped path gives, and the same ones in every replay.

Ground truth is the recording: the workload writes every clock value it read to a file, whose
bytes the kernel probe captured; a replay compares each written byte with them. The workload mixes
clock ids, gettimeofday/time and bursts of back-to-back reads longer than the table, so in-tracee
answers and their hand-over to trapped answers and back are exercised. Recorded both ways the
recorder can see vDSO reads: with the vDSO patched into syscalls at exec (the default of a command
the recorder starts: gettimeofday/time are in the log too) and with libc uprobes (a process caught
by name: glibc binds gettimeofday/time straight to the vDSO, so those are synthesized from the
replay clock, through a trap).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kprobe.schemas.syscall_table import nr
from tests.conftest import is_root
from tests.replay.conftest import record_run

NR_CLOCK_GETTIME, NR_GETTIMEOFDAY, NR_TIME = nr("clock_gettime"), nr("gettimeofday"), nr("time")
WORKLOADS = Path(__file__).resolve().parents[1] / "workloads" / "replay"
ROUNDS = 4

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module", params=["vdso", "uprobes"])
def clock_recording(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, probes_built: None):
    if not is_root():
        pytest.skip("attaching eBPF probes and ptrace need root (CI runs as root)")
    from kprobe.replay import fastpath

    assert fastpath.LIBRARY.exists(), "the replay hot path is not built: run `make -C replay` (setup.sh does)"
    tmp = tmp_path_factory.mktemp("clock")
    exe = tmp / "clock_burst"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(WORKLOADS / "clock_burst.c")], check=True)
    out = tmp / "clocks.txt"
    argv = [str(exe), str(out), str(ROUNDS)]
    log = record_run(tmp / "session", argv, time_reads=request.param)
    written = out.read_bytes()
    out.unlink()  # the replay must not need it
    return {"log": log, "argv": argv, "written": written, "time_reads": request.param}


def _answers(r) -> tuple:
    """Everything a replay observed and answered; a clock read answered in the tracee counts as a
    trapped syscall answered without a stop."""
    return (r.outcome, r.outputs, r.events_replayed, r.events_total, r.answered_syscalls,
            r.exit_code, r.replay_span_ms, r.synthesized_clock_reads,
            [(d.index, d.kind, d.expected, d.actual) for d in r.divergences])


def test_in_tracee_clock_answers_equal_trapped_ones_and_repeat(clock_recording) -> None:
    from kprobe.replay import intracee
    from kprobe.replay.engine import ReplayEngine

    if not intracee.supported():
        pytest.skip("the CPU lacks FSGSBASE: the in-tracee answer table is off and every clock read traps")
    log, argv = clock_recording["log"], clock_recording["argv"]
    vdso_patched = clock_recording["time_reads"] == "vdso"
    recorded_reads = [e for e in log.events if e.nr == NR_CLOCK_GETTIME and e.vdso != vdso_patched]
    bursts = sum(1030 + r for r in range(ROUNDS))
    assert len(recorded_reads) == ROUNDS * 2 + bursts, "every libc clock_gettime is in the log"
    others = [e.nr for e in log.events if e.nr in (NR_GETTIMEOFDAY, NR_TIME)]
    assert len(others) == (2 * ROUNDS if vdso_patched else 0)  # through the patched vDSO: syscalls
    assert clock_recording["written"].count(b"\n") == ROUNDS

    trapped = ReplayEngine(log, argv, in_tracee=False).run()          # the compiled loop, each read trapped
    python = ReplayEngine(log, argv, fast=False).run()             # the Python engine alone
    in_tracee = [ReplayEngine(log, argv).run() for _ in range(3)]  # clock reads answered in the tracee
    first = in_tracee[0]
    assert first.outcome == "identical" and first.outputs_identical, (first.divergences, first.notes)
    # every clock value the workload wrote equals the recorded one (byte comparison, in order) ...
    assert trapped.tracee_answers == python.tracee_answers == 0
    # ... most reads never stopped the tracee: all but the first of each run of reads (the one after a
    # stop the Python engine answered, here the synthesized gettimeofday/time) and one per full 1022-entry table
    assert first.tracee_answers >= len(recorded_reads) - ROUNDS * 4, first.notes
    assert first.stops < trapped.stops - first.tracee_answers // 2
    # ... and everything observable equals the trapped path's and the Python engine's
    assert _answers(first) == _answers(trapped) == _answers(python)
    # gettimeofday and time: in the log when the vDSO was patched, else synthesized
    assert first.synthesized_clock_reads == (0 if vdso_patched else 2 * ROUNDS)
    # identical across repeated replays, down to how many reads were answered where
    for r in in_tracee[1:]:
        assert _answers(r) == _answers(first)
        assert (r.tracee_answers, r.stops) == (first.tracee_answers, first.stops)


def test_answer_table_only_for_strict_replays_without_injections(clock_recording) -> None:
    """What-if replays need exact virtual-time arithmetic per read with injected delays: they run
    in the Python engine, every clock read traps (and the result still equals the strict one when
    the injection changes nothing)."""
    from kprobe.replay.engine import ReplayEngine
    from kprobe.replay.inject import parse

    log, argv = clock_recording["log"], clock_recording["argv"]
    lenient = ReplayEngine(log, argv, [parse("delay every fsync on /nonexistent/* by 5 ms")], strict=False).run()
    assert lenient.tracee_answers == 0 and lenient.fast_events == 0
    strict = ReplayEngine(log, argv).run()
    assert lenient.outputs == strict.outputs and lenient.outcome == strict.outcome == "identical"
