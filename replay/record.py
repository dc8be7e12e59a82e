"""Record one command replayably without the chDB store: the probes' shared maps (watch list,
fork/exec following) plus the replay stream. Used by tests and bench; `kprobe run --replayable`
records the same stream beside the full event store. The command runs serialized (one CPU, one
thread at a time between syscalls: replay/serialize.py), as replay will run it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from kprobe.agent.probeset import ProbeConfig, ProbeSet
from kprobe.replay.capture import ReplayCapture
from kprobe.replay.serialize import default_cpu, serialize_thread
from kprobe.replay.tracee import close_inherited_fds

# the sched object's off-CPU programs: they run on every context switch and wake-up of the host
OFFCPU_PROGRAMS = frozenset({"kp_sched_switch", "kp_sched_waking", "kp_sched_wakeup_new"})


@dataclass
class FollowOnly(ProbeConfig):
    """The sched probes for following processes only (fork, exec, exit keep the watch list).

    Why: this recorder never drains the off-CPU stream, but its programs ran on every context
    switch and wake-up of the whole host, and a replayable recording switches at every
    syscall that blocks: measured on bench/replay.py's ledger service (9 alternating rounds, busy
    host), leaving them out took the recorded run from 1.44x to 1.22x native wall time."""

    def wanted(self, program: str) -> bool:
        return program not in OFFCPU_PROGRAMS and super().wanted(program)


@dataclass
class Recording:
    session: Path
    pid: int
    returncode: int


@dataclass
class Started:
    pid: int
    stdout: BinaryIO | None
    ended_before_exec: int | None = None  # its exit status if it never exec'd (still to be reaped)

    def wait(self) -> int:
        return os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])


class ReplayRecorder:
    """Attach once, record several commands (each into the same session directory)."""

    def __init__(self, session: Path, cpu: int | None = None, policy: str | None = None, time_reads: str = "vdso"):
        self.session = session
        self.time_reads = time_reads  # "vdso": vDSO patched at exec (replay/vdso_exec.py); "uprobes": libc uprobes
        self.cpu = default_cpu() if cpu is None else cpu
        self.policy = policy  # "rr" or "fifo" (replay/serialize.py); None: KPROBE_REPLAY_SCHED or rr
        self.probes = ProbeSet(FollowOnly(filter_on=True, probes=("sched",))).open()
        self.capture = ReplayCapture(self.probes, session, cpu=self.cpu).start()

    def start(self, argv: list[str], stdout_pipe: bool = False) -> Started:
        """Fork, put the child on the watch list, then let it exec (so the log begins at its exec).
        The command gets stdin, stdout and stderr only, like the replayed one (close_inherited_fds)."""
        gate_r, gate_w = os.pipe()
        out_r, out_w = os.pipe() if stdout_pipe else (-1, -1)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                os.close(gate_w)
                if stdout_pipe:
                    os.dup2(out_w, 1)
                    os.close(out_r)
                os.read(gate_r, 1)
                close_inherited_fds()
                serialize_thread(0, self.cpu, self.policy)
                os.execvp(argv[0], argv)
            finally:
                os._exit(127)
        os.close(gate_r)
        if stdout_pipe:
            os.close(out_w)
        self.probes.watch_pid(pid)
        self.capture.before_exec(pid, self.time_reads)
        os.write(gate_w, b"x")
        os.close(gate_w)
        ended = self.capture.at_exec(pid)
        return Started(pid, os.fdopen(out_r, "rb") if stdout_pipe else None, ended)

    def stop(self) -> None:
        self.capture.flush()
        self.capture.stop()
        self.probes.close()
