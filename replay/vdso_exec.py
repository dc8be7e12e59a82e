"""Record a forked command's vDSO time reads as syscalls: its vDSO is patched at its exec.

Why: clock_gettime, gettimeofday, time, clock_getres and getcpu are served by the vDSO in user
space; syscall tracing never sees them. The other way to record them, uprobes on libc's
clock_gettime (replay/timeprobes.py), costs two traps per read (~2.0 µs of the service's CPU per
read measured here, its biggest single recording cost) and cannot see gettimeofday and time at
all: glibc binds them as IFUNCs straight to the vDSO, so replay had to synthesize their values.
Turning each vDSO entry into ``mov eax, NR; syscall; ret`` (what replay does to the replayed
process, tracee.py) makes every read, from libc or not (Go, static binaries), a real syscall that
the syscall tracepoints record with its value (~1.4 µs per read, syscall and programs), and the
recorded process then runs the same code path as the replayed one.

How: the recorder forks the command itself (ReplayRecorder, ``kprobe run``) and holds it before its
exec. The forking thread seizes it (PTRACE_SEIZE with TRACEEXEC and EXITKILL: no stop, no code in
the child), lets it exec, and at the exec stop (nothing of the new image has run) writes the
patches through /proc/<pid>/mem (copy-on-write: only this process's vDSO page changes), then
detaches. It must be the thread that forked: a ptrace stop of a child is also reported to the other
threads of the tracer's process (the real parent's ``waitpid`` could take it). Children the process
forks inherit the patched page; programs it execs get a fresh vDSO (replay follows one process).

Processes caught at their exec by name (``--watch-comm``) are already running when the recorder
learns of them: they keep the libc uprobes (capture.attach_time_uprobes).
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

PTRACE_CONT, PTRACE_DETACH, PTRACE_SEIZE = 7, 17, 0x4206
PTRACE_O_TRACEEXEC, PTRACE_O_EXITKILL = 0x10, 0x100000
EVENT_EXEC, EVENT_STOP = 4, 0x80
WALL = 0x40000000


@dataclass
class ExecPatch:
    """What happened to one command at its exec."""

    patched: list[str] = field(default_factory=list)   # vDSO symbols now a syscall
    error: str = ""                                    # why not (its time reads then go unrecorded)
    exit_status: int | None = None                     # the command ended before its exec (not reaped)

    def as_meta(self) -> dict:
        return {"vdso_patched": self.patched, "error": self.error}


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.restype = ctypes.c_long
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    return libc


def seize(pid: int) -> str:
    """Trace ``pid`` (a child held before its exec) without stopping it; "" or why not."""
    libc = _libc()
    if libc.ptrace(PTRACE_SEIZE, pid, None, ctypes.c_void_p(PTRACE_O_TRACEEXEC | PTRACE_O_EXITKILL)) != 0:
        return f"ptrace(SEIZE): {os.strerror(ctypes.get_errno())}"
    return ""


def patch_at_exec(pid: int, fallback: Callable[[], None] | None = None) -> ExecPatch:
    """Wait for the seized child's exec, patch its vDSO, detach. If the patch fails, ``fallback``
    runs while the new image is still stopped (the recorder attaches the libc uprobes instead).
    A child that ends before its exec is left for its parent to reap (``exit_status`` says so)."""
    from kprobe.replay import tracee as T  # python-ptrace: imported only where a command is recorded

    libc = _libc()
    out = ExecPatch()
    while True:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WSTOPPED | os.WNOWAIT | WALL)
        if info is None:
            continue
        if info.si_code in (os.CLD_EXITED, os.CLD_KILLED, os.CLD_DUMPED):
            out.exit_status = info.si_status
            out.error = "the command ended before its exec"
            return out
        _, status = os.waitpid(pid, WALL)  # take the stop we were told of
        if not os.WIFSTOPPED(status):
            out.error = f"unexpected wait status {status:#x}"
            return out
        if status >> 16 == EVENT_EXEC:
            break
        sig = os.WSTOPSIG(status)  # a signal before its exec: deliver it (a group-stop: just resume)
        if status >> 16 == EVENT_STOP or sig == signal.SIGTRAP:
            sig = 0
        if libc.ptrace(PTRACE_CONT, pid, None, ctypes.c_void_p(sig)) != 0:
            out.error = f"ptrace(CONT): {os.strerror(ctypes.get_errno())}"
            return out
    try:
        mem = T.Memory(pid)
        try:
            out.patched = T.patch_vdso(pid, mem)
        finally:
            mem.close()
    except OSError as e:
        out.error = f"vDSO not patched: {e}"
    if not out.patched and fallback is not None:
        fallback()
    if libc.ptrace(PTRACE_DETACH, pid, None, None) != 0:
        out.error = out.error or f"ptrace(DETACH): {os.strerror(ctypes.get_errno())}"
    return out
