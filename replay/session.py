"""The state of one replay run, declared in one place, and its results.

ReplayEngine (engine.py) holds what the caller asked for; a Session holds everything a run
changes: the tracee's threads and fds, the thread order, what was answered and compared. The
modules that act on a stopped syscall (rules.py: answering by the syscall table's rule,
vclock.py: virtual time and clock reads, threads.py: thread life and the stuck report) take the
session instead of reaching into the engine, so each field has one declaration and one meaning.
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from kprobe.replay import fastpath as F
from kprobe.replay import intracee as V
from kprobe.replay import tracee as T
from kprobe.replay.inject import Injection
from kprobe.replay.log import Event, ProcessLog
from kprobe.replay.order import Thread, ThreadOrder

MAX_DIVERGENCES = 50


@dataclass
class Divergence:
    index: int            # recorded event index where replay and log part
    tid: int
    kind: str             # sequence | bytes | fd | result | stuck
    expected: str
    actual: str


@dataclass
class Request:
    fd: int
    recorded_ms: float
    replay_ms: float
    timed_out: bool = False


@dataclass
class ReplayResult:
    outcome: str                                   # identical | diverged | unsupported | incomplete-log | error
    events_total: int
    events_replayed: int
    divergences: list[Divergence] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)          # channel -> sha256 of replayed bytes
    recorded_outputs: dict[str, str] = field(default_factory=dict)  # channel -> sha256 of recorded bytes
    requests: list[Request] = field(default_factory=list)
    verdict: str = ""
    notes: list[str] = field(default_factory=list)
    exit_code: int | None = None
    wall_s: float = 0.0
    recorded_span_ms: float = 0.0
    replay_span_ms: float = 0.0
    synthesized_clock_reads: int = 0
    stops: int = 0
    fast_events: int = 0                           # answered by the compiled hot path (fastpath.c)
    hot_syscalls: str = "ptrace"                   # how hot syscalls reached the tracer: ptrace | seccomp-notify
    tracee_answers: int = 0                        # syscalls and clock reads answered in the tracee (intracee.py)
    answer_table: bool = False                     # the table was mapped (costs SETUP_STOPS extra stops)
    ambiguous_order: int = 0                       # points where the recorded thread order is not decided by syscalls

    @property
    def answered_syscalls(self) -> int:
        """Trapped syscalls answered, wherever: comparable between replays with and without the
        in-tracee answer table (whose set-up adds an injected mmap's exit stop and a restart)."""
        return self.stops + self.tracee_answers - (V.SETUP_STOPS if self.answer_table else 0)

    @property
    def outputs_identical(self) -> bool:
        return self.outputs == self.recorded_outputs


@dataclass
class Prepared:
    """Derived once per loaded log (cached in ProcessLog.derived), shared by its replays."""

    expected: list[Event]                 # the events the tracee will trap on, in recorded order
    by_thread: dict[int, list[Event]]     # recorded tid -> its expected events (copied per replay)
    pred_exit: dict[int, int]             # event index -> recorded exit of its thread's predecessor
    unconsumed: list[int]                 # sorted indices of non-clock events (read-only)
    recorded_outputs: dict[str, str]      # channel -> sha256 of the recorded output bytes
    max_gap_s: dict[int, float]           # recorded tid -> longest recorded run between two of its events
    handoff_fds: frozenset[int]           # fds some thread answers on without reading there
    next_other: dict[int, int]            # event index (-1: start) -> the next ordered event of another thread
    next_other_arr: np.ndarray            # the same for the compiled loop: [i + 1] for event i (read-only there)
    indices: dict[int, np.ndarray]        # recorded tid -> indices of its expected events
    exit_group: Event | None              # the recorded exit_group, if any (found once, not per replay)


def chan_key(fd: int) -> str:
    return f"fd{fd}"


@dataclass(slots=True)
class Session:
    """Everything one replay run changes. Built by ReplayEngine._run from the prepared log.

    Slotted: a field that is not declared here cannot be created on the fly (AttributeError)."""

    # -- what the caller asked for (ReplayEngine's settings the handlers need) ------------------
    log: ProcessLog
    strict: bool
    injections: list[Injection]
    # what-if mode: a call the recording does not hold is asked about before it runs for real; a
    # reason back means it is answered EPERM instead (replay/whatif_guard.py: calls with effects
    # outside the process). None: unmatched calls run for real.
    guard: Callable[[Session, int, int, tuple[int, ...]], str | None] | None
    # -- the recording, as prepared for replay (shared, read-only) -------------------------------
    prep: Prepared
    by_rtid: dict[int, list[Event]]       # recorded tid -> its expected events (this run's copy: lenient reorders)
    exit_group: Event | None              # the recorded exit_group, if any
    res: ReplayResult
    # -- thread order (replay/order.py, threads.py) ----------------------------------------------
    order: ThreadOrder
    threads: dict[int, Thread] = field(default_factory=dict)              # replay tid -> thread
    spawned: dict[int, tuple[int, int]] = field(default_factory=dict)     # recorded child tid -> (clone's recorded exit, parent's vt)
    # a clone's child is mapped to its recorded tid at the parent's PTRACE_EVENT_CLONE stop (whose
    # message is the child's tid), whichever of that stop and the child's first comes first
    clone_of: dict[int, int] = field(default_factory=dict)    # parent tid -> recorded child tid of its clone in flight
    child_rtid: dict[int, int] = field(default_factory=dict)  # child tid -> recorded tid, its first stop not seen yet
    unmapped: set[int] = field(default_factory=set)           # children stopped before their parent's clone stop
    seen: set[int] = field(default_factory=set)               # every task that stopped (reaped at the end)
    stuck: Divergence | None = None       # set by the watchdog: the replay made no progress
    exiting: bool = False                 # exit_group ran: the kernel ends every thread, nobody is released
    started: bool = False                 # the program's exec happened (before it: the tracer's own child)
    pid: int = 0
    progress: int = 0                     # stops handled (the watchdog's measure)
    cur_ev: tuple = ("", 0, 0)            # the stop being handled
    # -- fds -------------------------------------------------------------------------------------
    emulated: set[int] = field(default_factory=lambda: {0, 1, 2})  # answered from the log
    sockets: set[int] = field(default_factory=set)
    fd_version: int = 0                   # bumped whenever emulated/sockets change (plans depend on them)
    fd_path: dict[int, str] = field(default_factory=lambda: {0: "stdin", 1: "stdout", 2: "stderr"})
    # -- requests and outputs --------------------------------------------------------------------
    out_bytes: dict[str, hashlib._Hash] = field(default_factory=dict)   # channel -> hash of replayed output
    handoff: dict[int, collections.deque[tuple[int, int]]] = field(default_factory=dict)  # fd -> requests in arrival order
    handoff_last: dict[int, tuple[int, int]] = field(default_factory=dict)  # fd -> the request answered last
    # fd -> (replay arrival, recorded arrival) of the last input; fd -> virtual minus recorded time
    # of the last output. Arrays shared with the compiled hot path.
    pending: F.Pending | None = None
    out_shift: F.OutShift | None = None
    # -- the virtual clock -----------------------------------------------------------------------
    skipped_clock_reads: int = 0          # recorded clock reads the replay did not make
    rdtsc_count: int = 0                  # rdtsc faults answered with synthetic values
    # -- the tracee and the fast paths -----------------------------------------------------------
    mem: T.Memory | None = None
    fp: F.FastPath | None = None          # the compiled hot path (None: Python only)
    notif_pending: dict[int, int] = field(default_factory=dict)  # tid -> id of its notified syscall not answered yet
    slots: list[int] = field(default_factory=list)               # slot -> replay tid, for the compiled loop
    slot_of: dict[int, int] = field(default_factory=dict)
    owner: np.ndarray | None = None       # event index -> slot of its thread (the compiled loop's order)
    vc: V.AnswerTable | None = None       # the in-tracee answer table
    vc_state: str = "off"                 # want | injecting | on | off
    refused: int = 0                      # unmatched calls the guard answered EPERM

    @property
    def consumed(self) -> set[int]:
        return self.order.consumed

    # -- answering the stopped syscall -----------------------------------------------------------
    def skip(self, tid: int, regs, ret: int) -> None:
        """Answer the stopped call with ``ret`` without running it."""
        nid = self.notif_pending.pop(tid, None)
        if nid is not None:
            self.fp.respond(nid, ret)  # type: ignore[union-attr]
            return
        regs.orig_rax = (1 << 64) - 1
        regs.rax = ret & ((1 << 64) - 1)
        T.set_regs(tid, regs)
        T.cont(tid)

    def passthrough(self, tid: int) -> None:
        """Let the stopped call run for real."""
        nid = self.notif_pending.pop(tid, None)
        if nid is not None:
            self.fp.respond(nid, 0, run_it=True)  # type: ignore[union-attr]
            return
        T.cont(tid)

    def output(self, fd: int, data: bytes) -> None:
        """Add bytes the replay wrote on ``fd`` to that channel's hash."""
        self.out_bytes.setdefault(chan_key(fd), hashlib.sha256()).update(data)

    def diverge(self, index: int, rtid: int, kind: str, expected: str, actual: str) -> None:
        if self.res.outcome in ("identical", "incomplete-log"):
            self.res.outcome = "diverged"
        if len(self.res.divergences) < MAX_DIVERGENCES:
            self.res.divergences.append(Divergence(index, rtid, kind, expected, actual))

    def unsupported(self, why: str) -> str:
        self.res.outcome = "unsupported"
        self.res.notes.append(f"unsupported: {why}")
        return "abort"
