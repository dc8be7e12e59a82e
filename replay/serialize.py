"""Run a replayably recorded process the way replay will: its threads one at a time between syscalls.

Why: replay orders threads by their recorded syscalls; the user code between two syscalls of a
thread (taking an uncontended mutex, bumping a shared counter) never enters the kernel and leaves
no record. Replay can only reproduce it if, in the recording, that code ran as a block that no
other thread of the process overlapped: then the order in which threads came back from their
syscalls is the order in which those blocks ran, and a replay that runs one thread at a time in
that order rebuilds the same memory. rr gets the same property by recording on one core with its
own scheduler; here the kernel's scheduler does it, given two settings for every thread of the
recorded process (threads inherit them):

* one CPU (affinity): no two threads run at once;
* ``SCHED_RR`` at real-time priority 1: a woken sibling does not preempt the running thread, and
  neither does any ordinary (fair-class) task, e.g. the kworker finishing an fsync; a real-time
  task that does preempt it (migration, threaded IRQs) hands the CPU back to it, not to a sibling
  (a preempted RR thread stays first in its queue). So a thread gives up the CPU in a syscall,
  not halfway through its user code. A thread that computes for a whole round-robin slice
  (100 ms) without a syscall is switched to a sibling, so a spinning thread cannot lock its
  siblings out; the kernel's real-time throttling keeps 5% of that CPU for other tasks.

Seen with SCHED_BATCH instead (no wake-up preemption among siblings): the kworker
completing one worker's fsync preempted another worker between two of its syscalls, and the
scheduler then ran the fsync'ing sibling first: the lock order changed between two syscalls,
which replay cannot see. Without CAP_SYS_NICE the fallback is SCHED_BATCH with the longest slice
the kernel grants (``sched_attr.sched_runtime``, Linux 6.12+), noted in the log's meta.json.

``KPROBE_REPLAY_SCHED=fifo`` records with SCHED_FIFO instead: no slice at all, so a thread that
computes for long (a JVM loading classes and compiling at start-up) is never switched to a sibling
between two syscalls (measured: the JDK's HttpServer with a 4-thread pool, recorded with RR, has
such points and its replay diverges after one; recorded with FIFO it replays identically). The
price: a thread that spins waiting for a sibling without any syscall or sched_yield never lets it
run, on that CPU, and hangs the recorded process (RR lets the sibling in after 100 ms).

What remains (a real-time preemption at the wrong time, a thread running a whole slice) is seen
by the replay probe, which records when a thread was switched out between two syscalls while a
sibling ran (probes/replay.bpf.c, ``KP_NR_RESUME``); replay says so (replay/README.md, "Threads").
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

from kprobe.schemas import syscall_table as ST

SCHED_FIFO, SCHED_RR, SCHED_BATCH = 1, 2, 3
RT_PRIORITY = 1
POLICY_ENV = "KPROBE_REPLAY_SCHED"   # rr (default) or fifo
NR_SCHED_SETATTR = ST.nr("sched_setattr")
SLICE_NS = 100_000_000  # the kernel's upper bound for a fair task's requested slice


class _SchedAttr(ctypes.Structure):
    _fields_ = [("size", ctypes.c_uint32), ("sched_policy", ctypes.c_uint32), ("sched_flags", ctypes.c_uint64),
                ("sched_nice", ctypes.c_int32), ("sched_priority", ctypes.c_uint32),
                ("sched_runtime", ctypes.c_uint64), ("sched_deadline", ctypes.c_uint64),
                ("sched_period", ctypes.c_uint64), ("sched_util_min", ctypes.c_uint32),
                ("sched_util_max", ctypes.c_uint32)]


@dataclass(frozen=True)
class Serialization:
    """What was applied to a recorded process (kept in the replay log's meta.json)."""

    cpu: int
    policy: str          # "rr", or what it fell back to and why
    slice_ns: int        # requested slice; 0 if the kernel refused it

    def as_meta(self) -> dict:
        return {"cpu": self.cpu, "policy": self.policy, "slice_ns": self.slice_ns}


def default_cpu() -> int:
    """The highest CPU this process may use (CPU 0 usually takes the most interrupts)."""
    return max(os.sched_getaffinity(0))


def policy_name() -> str:
    """rr (default) or fifo, from the environment (``kprobe run`` passes it to its child)."""
    return "fifo" if os.environ.get(POLICY_ENV, "rr").lower() == "fifo" else "rr"


def _set_policy(tid: int, libc: ctypes.CDLL, nice: int, name: str) -> tuple[str, int]:
    """SCHED_RR (or FIFO) priority 1; else SCHED_BATCH with the longest slice the kernel grants."""
    try:
        os.sched_setscheduler(tid, SCHED_FIFO if name == "fifo" else SCHED_RR, os.sched_param(RT_PRIORITY))
        return name, 0
    except OSError as e:
        refused = f"SCHED_{name.upper()} refused ({e.strerror})"
    for runtime in (SLICE_NS, 0):
        attr = _SchedAttr(ctypes.sizeof(_SchedAttr), SCHED_BATCH, 0, nice, 0, runtime, 0, 0, 0, 0)
        if libc.syscall(NR_SCHED_SETATTR, tid, ctypes.byref(attr), 0) == 0:
            return f"batch ({refused})", runtime
    err = ctypes.get_errno()
    return f"unchanged ({refused}; sched_setattr: {os.strerror(err)})", 0


def serialize_thread(tid: int, cpu: int, policy: str | None = None) -> Serialization:
    """One CPU and SCHED_RR (``policy`` "fifo": SCHED_FIFO; None: from the environment), or the
    fallback, for ``tid`` (0: the calling thread). New threads inherit it."""
    libc = ctypes.CDLL(None, use_errno=True)
    os.sched_setaffinity(tid, {cpu})
    try:
        nice = os.getpriority(os.PRIO_PROCESS, tid)
    except OSError:
        nice = 0
    applied, runtime = _set_policy(tid, libc, nice, policy or policy_name())
    return Serialization(cpu, applied, runtime)


def observed(pid: int, cpu: int) -> Serialization | None:
    """How ``pid`` runs if it is already serialized on ``cpu`` (it did it itself before its exec:
    kprobe run, ReplayRecorder), else None. Changes nothing."""
    current = os.sched_getscheduler(pid)
    if current in (SCHED_RR, SCHED_FIFO) and os.sched_getaffinity(pid) == {cpu}:
        return Serialization(cpu, "fifo" if current == SCHED_FIFO else "rr", 0)
    return None


def serialize_process(pid: int, cpu: int) -> Serialization | None:
    """Every current thread of ``pid`` (a process already running, e.g. caught by --watch-comm at
    its exec); None if it is gone. Threads it made before this call may already have overlapped.
    A process serialized before its exec (kprobe run, ReplayRecorder) is left as it is."""
    try:
        if (s := observed(pid, cpu)) is not None:
            return s
    except OSError:
        return None
    result = None
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return None
    for tid in tids:
        try:
            result = serialize_thread(tid, cpu)
        except OSError:
            continue  # the thread ended meanwhile
    return result
