"""Replay one recorded process under ptrace: inputs from the log, outputs compared, virtual time.

Policy per trapped syscall (the seccomp filter lets memory/signal/thread bookkeeping run):

* fds are either *passthrough* (files opened read-only that exist here, directories: the real
  kernel serves them, e.g. Python's start-up reading its stdlib) or *emulated* (stdio, sockets,
  files opened for writing or missing here: the log answers). An emulated fd still holds a real fd
  number in the tracee: the creating call is rewritten to ``eventfd2`` so later opens get the same
  numbers as in the recording (checked at the syscall-exit stop).
* reads/recv/accept/getrandom/stat on emulated fds: the recorded bytes are written into the
  tracee's buffers and the recorded return value is returned; the real syscall never runs.
* writes/send on emulated fds: not executed; the bytes are compared with the recorded ones.
* clock_gettime/gettimeofday/time (vDSO patched to trap): the recorded value when the log has the
  read, shifted by the virtual-time difference; otherwise synthesized from the replay clock.
* threads (replay/order.py): one runs at a time; a thread that stops at a syscall whose recorded
  event is not the earliest open one is parked, and the parked thread holding that event is
  released when nobody runs. futex and sched_yield are answered from the log like the rest, so no
  thread ever blocks on a sibling the order holds back; one that still cannot move is reported
  (replay/watchdog.py), never waited for.

Speed: runs of events the log fully decides are answered by a compiled loop (fastpath.c, via
fastpath.py), the hottest syscalls as seccomp notifications, and where possible inside the tracee
without any stop (intracee.py: libc's hot wrappers and the vDSO clock call stubs that answer from a
table the compiled loop fills); every other stop comes here.

Virtual time per thread: each matched event advances it by the recorded think time and duration
(plus injected delays); a wait for external input (socket reads, accept, poll) completes no
earlier than it did in the recording. Without injections, virtual time equals the recorded time.
"""

from __future__ import annotations

import collections
import fnmatch
import gc
import hashlib
import os
import signal
import stat
import struct
import time
from dataclasses import dataclass, field

import numpy as np

from kprobe.masking import mask_same_length
from kprobe.replay import fastpath as F
from kprobe.replay import intracee as V
from kprobe.replay import tracee as T
from kprobe.replay.inject import Injection
from kprobe.replay.log import Event, ProcessLog
from kprobe.replay.order import Parked, ThreadOrder, stuck_report
from kprobe.replay.order import Thread as _Thread
from kprobe.replay.redact import matches_logged, overlay_logged
from kprobe.replay.seccomp import trapped
from kprobe.replay.syscall_sets import (
    ACCEPTS,
    ALWAYS_ANSWERED,
    BARRIERS,
    CLOCKS,
    CLONE_THREAD,
    CLONES,
    EXTERNAL_NRS,
    FCNTL_DUPFD,
    FD_PAIRS,
    FUTEX_KERNEL_WRITES,
    INPUT_WAITS,
    KEYED,
    NR_ACCEPT4,
    NR_CLOCK_GETTIME,
    NR_CLONE,
    NR_CLONE3,
    NR_EVENTFD2,
    NR_EXIT_GROUP,
    NR_FCNTL,
    NR_GETTIMEOFDAY,
    NR_OPENAT,
    NR_RECVFROM,
    NR_SOCKET,
    NR_SOCKETPAIR,
    NR_TIME,
    ON_FD,
    READS,
    RULE,
    SOCK_CLOEXEC,
    TARGETS,
    WRITES,
    Rule,
    describe,
    futex_runs_for_real,
    sysname,
)
from kprobe.replay.watchdog import Watchdog
from kprobe.schemas import layouts as L

O_ACCMODE, O_CREAT, O_TRUNC, O_APPEND, O_DIRECTORY = 3, 0o100, 0o1000, 0o2000, 0o200000
CLOCK_REALTIME, CLOCK_REALTIME_COARSE, CLOCK_TAI = 0, 5, 11
WALL_CLOCKS = frozenset({CLOCK_REALTIME, CLOCK_REALTIME_COARSE, CLOCK_TAI})  # shifted by the log's clock offset
MAX_DIVERGENCES = 50
STUCK_S = 2.0  # a replay that makes no progress this long (plus what the running thread needs) ends
BLOCKED_NS = 50_000  # an input call this long waited for its peer


@dataclass
class Divergence:
    index: int            # recorded event index where replay and log part
    tid: int
    kind: str             # sequence | bytes | fd | result
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
class _Prepared:
    """Derived once per loaded log (cached in ProcessLog.derived), shared by its replays."""

    expected: list[Event]                 # the events the tracee will trap on, in recorded order
    by_thread: dict[int, list[Event]]     # recorded tid -> its expected events (copied per replay)
    pred_exit: dict[int, int]             # event index -> recorded exit of its thread's predecessor
    unconsumed: list[int]                 # sorted indices of non-clock events (read-only)
    recorded_outputs: dict[str, str]      # channel -> sha256 of the recorded output bytes
    max_gap_s: dict[int, float]           # recorded tid -> longest recorded run between two of its events
    handoff_fds: frozenset[int]           # fds some thread answers on without reading there
    next_other: dict[int, int]            # event index (-1: start) -> the next ordered event of another thread


def _next_other(expected: list[Event]) -> dict[int, int]:
    """For each event, the index of the next ordered (non-clock) event of another thread: while a
    thread runs, everything before that is its own, so the compiled loop may answer it in one go
    (strict replays only: then every event before the running thread's next one is done)."""
    out: dict[int, int] = {}
    first_idx, first_tid, second_idx = 1 << 62, None, 1 << 62
    for e in reversed(expected):
        out[e.index] = first_idx if first_tid != e.tid else second_idx
        if e.nr in CLOCKS:
            continue
        if e.tid == first_tid:
            first_idx = e.index
        else:
            first_idx, first_tid, second_idx = e.index, e.tid, first_idx
    # -1: before the first event; only the main thread exists then, and nothing is another's yet
    out[-1] = first_idx if first_tid is not None and expected and first_tid != expected[0].tid else second_idx
    return out


def _handoff_fds(by_thread: dict[int, list[Event]]) -> frozenset[int]:
    """fds where a thread writes without ever reading there while another thread reads: a reader
    thread hands requests to workers, so each reply answers the oldest input still open, or, when
    none is, the one answered last (a read that carried several requests). Elsewhere a thread's
    reply answers its own last input (one request however many reads it took)."""
    readers: dict[int, set[int]] = {}
    writers: dict[int, set[int]] = {}
    for rtid, q in by_thread.items():
        for e in q:
            fd = e.args[0] & 0xFFFFFFFF
            if e.nr in READS:
                readers.setdefault(fd, set()).add(rtid)
            elif e.nr in WRITES:
                writers.setdefault(fd, set()).add(rtid)
    return frozenset(fd for fd, w in writers.items() if fd in readers and w - readers[fd])


def _chan_key(fd: int) -> str:
    return f"fd{fd}"


def _recorded_outputs(expected: list[Event]) -> dict[str, str]:
    hashes: dict[str, hashlib._Hash] = {}
    for e in expected:
        if e.nr in WRITES and e.ret > 0:
            hashes.setdefault(_chan_key(e.args[0]), hashlib.sha256()).update(e.regions.get(0, b"")[: e.ret])
    return {k: h.hexdigest() for k, h in hashes.items()}


@dataclass
class ReplayEngine:
    log: ProcessLog
    argv: list[str]
    injections: list[Injection] = field(default_factory=list)
    strict: bool = True
    cpu: int = 0
    env: dict[str, str] | None = None
    deadline_ms: float | None = None
    timeout_s: float = 120.0
    fast: bool = True                              # use the compiled hot path when it is built
    notify: bool = True                            # with it, hot syscalls as seccomp notifications
    in_tracee: bool = True                         # with it, answers inside the tracee where possible (intracee.py)

    def run(self) -> ReplayResult:
        """Replay once. Garbage collection is off meanwhile: preparing the log and the loop
        allocate steadily, and each collection that triggers walks the whole loaded log (tens of
        thousands of events): ~12% of a replay's wall time, more in a big process. Nothing here
        makes reference cycles worth collecting; collection resumes afterwards."""
        gc_was_on = gc.isenabled()
        gc.disable()
        try:
            return self._run()
        finally:
            if gc_was_on:
                gc.enable()

    def _run(self) -> ReplayResult:
        log = self.log
        prep = self._prepared()
        self.expected = prep.expected
        self.res = ReplayResult("identical", len(self.expected), 0)
        if log.replayable_until < len(log.events):
            self.res.notes.append(f"log complete up to event {log.replayable_until} only: {log.problem}")
        self.res.recorded_outputs = dict(prep.recorded_outputs)
        by_thread = {rtid: list(q) for rtid, q in prep.by_thread.items()}  # lenient matching reorders them
        self.pred_exit = prep.pred_exit
        self.max_gap_s = prep.max_gap_s
        self.handoff_fds = prep.handoff_fds
        self.next_other = prep.next_other
        self.exit_group = next((e for e in self.expected if e.nr == NR_EXIT_GROUP), None)
        self.handoff: dict[int, collections.deque[tuple[int, int]]] = {}  # fd -> requests in arrival order
        self.handoff_last: dict[int, tuple[int, int]] = {}  # fd -> the request answered last
        self.order = ThreadOrder(prep.unconsumed)
        self.consumed = self.order.consumed
        self.threads: dict[int, _Thread] = {}
        self.spawned: dict[int, tuple[int, int]] = {}    # recorded child tid -> (clone's recorded exit, parent's vt)
        # a clone's child is mapped to its recorded tid at the parent's PTRACE_EVENT_CLONE stop
        # (whose message is the child's tid), whichever of that stop and the child's first comes first
        self.clone_of: dict[int, int] = {}       # parent tid -> recorded child tid of its clone in flight
        self.child_rtid: dict[int, int] = {}     # child tid -> recorded tid, its first stop not seen yet
        self.unmapped: set[int] = set()          # children stopped before their parent's clone stop
        self.stuck: Divergence | None = None
        self.cur_ev: tuple = ("", 0, 0)          # the stop being handled
        self.exiting = False                     # exit_group ran: the kernel ends every thread, nobody is released
        self.slots: list[int] = []               # slot -> replay tid, for the compiled loop
        self.slot_of: dict[int, int] = {}
        self.by_rtid = by_thread
        self.emulated: set[int] = {0, 1, 2}
        self.sockets: set[int] = set()
        self.fd_version = 0                       # bumped whenever emulated/sockets change (plans depend on them)
        self.fd_path: dict[int, str] = {0: "stdin", 1: "stdout", 2: "stderr"}
        self.out_bytes: dict[str, hashlib._Hash] = {}
        self.fp = self._fast_path(by_thread)
        # fd -> (replay arrival, recorded arrival) of the last input; fd -> virtual minus recorded
        # time of the last output. Arrays shared with the compiled hot path.
        self.pending = self.fp.pending if self.fp else F.Pending()
        self.out_shift = self.fp.out_shift if self.fp else F.OutShift()
        self.counts: dict[tuple[str, int], int] = {}
        self.started = False
        self.skipped_clock_reads = 0
        self.seen: set[int] = set()
        t0 = time.monotonic()
        self.notif_pending: dict[int, int] = {}   # tid -> id of its notified syscall not answered yet
        notify = bool(self.fp and self.notify)
        self.pid = 0
        self.progress = 0
        dog = Watchdog(STUCK_S, lambda: (self.progress, self.fp.ctx.steps if self.fp else 0), self._allowance,
                       self._stuck_running, lambda: self.pid and os.kill(self.pid, signal.SIGKILL)).start()
        try:
            pid, listener = T.spawn(self.argv, self.env, self.cpu, notify=F.NOTIFIED if notify else frozenset())
        except BaseException:
            dog.stop()
            raise
        self.res.hot_syscalls = "seccomp-notify" if listener >= 0 else "ptrace"
        if notify and listener < 0:
            self.res.notes.append("another thread of this process could take the SIGCHLD of a ptrace stop: "
                                  "hot syscalls use ptrace stops, not seccomp notifications")
        if self.fp:
            self.fp.ctx.notif_fd = listener
        self.pid = pid
        self.mem: T.Memory | None = None
        self.vc: V.AnswerTable | None = None
        self.vc_state = "want" if self.fp and self.in_tracee and V.supported() else "off"
        try:
            self._loop(pid)
            if self.vc is not None and self.vc.tid in self.threads:
                # answers the table's owner took before the process ended (its own exit was not
                # necessarily reported before the main thread's)
                self._table_sync(self.vc.tid)
        finally:
            dog.stop()
            self._reap(pid)
            if self.mem:
                self.mem.close()
            if self.vc and self.fp:
                self.fp.ctx.vtab = None
                self.vc.close()
            if self.fp:
                self.fp.close()
        self.res.wall_s = time.monotonic() - t0
        self.res.fast_events = self.fp.handled if self.fp else 0
        if self.stuck is not None:
            self._diverge(self.stuck.index, self.stuck.tid, self.stuck.kind, self.stuck.expected, self.stuck.actual)
        self.res.outputs = {k: h.hexdigest() for k, h in self.out_bytes.items()}
        for k in self.res.recorded_outputs:
            self.res.outputs.setdefault(k, hashlib.sha256().hexdigest())
        if self.res.outcome == "identical" and self.res.events_replayed < len(self.expected):
            missing = [e for e in self.expected if e.index not in self.consumed and e.nr not in CLOCKS
                       and not self._cut_off(e)]
            if missing:
                e = missing[0]
                self._diverge(e.index, e.tid, "sequence", describe(e.nr, e.args, e.ret), "process ended")
        if self.res.outcome == "identical" and log.replayable_until < len(log.events):
            self.res.outcome = "incomplete-log"
        self._note_ambiguity()
        if self.skipped_clock_reads:
            self.res.notes.append(f"{self.skipped_clock_reads} recorded clock reads were not made by the replay")
        if getattr(self, "rdtsc_count", 0):
            self.res.notes.append(f"rdtsc executed {self.rdtsc_count} times: answered with synthetic values")
        self._verdict()
        return self.res

    def _note_ambiguity(self) -> None:
        """Say where the recording's thread order was not decided by syscalls (log.Ambiguity), and
        whether the first divergence came after such a point (then it is the likely cause)."""
        amb = self.log.ambiguous
        self.res.ambiguous_order = len(amb)
        if not amb:
            return
        a = amb[0]
        where = f"in {sysname(a.syscall)}" if a.syscall >= 0 else f"in user mode at ip {a.ip:#x}"
        self.res.notes.append(
            f"thread order ambiguous at {len(amb)} point(s) of the recording: first, thread {a.tid} was switched "
            f"out between two hand-overs ({where}, after event {a.after}) and a sibling ran for "
            f"{(a.in_ns - a.out_ns) / 1000:.0f} us before it resumed; replay runs that thread's code there as one block")
        if self.res.divergences:
            d = self.res.divergences[0]
            before = [x for x in amb if x.after <= d.index]
            if before:
                self.res.notes.append(f"the first divergence (event {d.index}) comes after the ambiguous point at "
                                      f"event {before[-1].after} (thread {before[-1].tid}): likely its cause, an "
                                      "interleaving between syscalls that the log cannot order")

    def _prepared(self) -> _Prepared:
        """What every replay of this log derives from it, computed once per loaded log."""
        prep = self.log.derived.get("replay")
        if prep is None:
            expected = [e for e in self.log.events[: self.log.replayable_until] if trapped(e.nr, e.args)]
            by_thread: dict[int, list[Event]] = {}
            for e in expected:
                by_thread.setdefault(e.tid, []).append(e)
            # think time of an event = its recorded gap to its own predecessor, even when a what-if
            # binary makes it earlier or later than in the recording
            pred_exit: dict[int, int] = {}
            for q in by_thread.values():
                for prev, e in zip(q, q[1:], strict=False):
                    pred_exit[e.index] = prev.exit_ns
            unconsumed = sorted(e.index for e in expected if e.nr not in CLOCKS)
            max_gap = {rtid: max((b.enter_ns - a.exit_ns for a, b in zip(q, q[1:], strict=False)), default=0) / 1e9
                       for rtid, q in by_thread.items()}
            prep = _Prepared(expected, by_thread, pred_exit, unconsumed, _recorded_outputs(expected), max_gap,
                             _handoff_fds(by_thread), _next_other(expected))
            self.log.derived["replay"] = prep
        return prep

    def _fast_path(self, by_thread: dict[int, list[Event]]) -> F.FastPath | None:
        """The compiled hot path for strict replays without injections, if it was built."""
        if not self.fast or not self.strict or self.injections:
            return None
        lib = F.load_library()
        if lib is None:
            self.res.notes.append(f"compiled hot path not built ({F.LIBRARY}: `make -C replay`): "
                                  "replaying in Python only")
            return None
        rules = F.Rules(READS, WRITES, CLOCKS, BARRIERS, ALWAYS_ANSWERED,
                        frozenset((KEYED | ON_FD) - READS.keys() - WRITES.keys()), KEYED, TARGETS,
                        frozenset(INPUT_WAITS), EXTERNAL_NRS, BLOCKED_NS, frozenset(FCNTL_DUPFD),
                        FUTEX_KERNEL_WRITES)
        fp = F.FastPath(lib, rules)
        fp.prepare(by_thread, self.pred_exit, self.log.derived, self.handoff_fds)
        return fp

    def _reap(self, pid: int) -> None:
        """Kill the tracee and every task it made (forked children are traced and stopped too)."""
        for p in {pid, *self.seen}:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        waiting = {pid, *self.seen}
        while waiting and time.monotonic() < deadline:
            # any traced task: a thread never seen (killed before its first stop was read) must be
            # reaped too, or the main thread's exit is never reported
            try:
                wpid, status = os.waitpid(-1, T.WALL | os.WNOHANG)
            except ChildProcessError:
                return
            if wpid and (os.WIFEXITED(status) or os.WIFSIGNALED(status)):
                waiting.discard(wpid)
            elif not wpid:
                time.sleep(0.0005)

    # -- the ptrace loop -------------------------------------------------------------------------
    def _loop(self, pid: int) -> None:
        deadline = time.monotonic() + self.timeout_s
        alive = {pid}
        while alive:
            if time.monotonic() > deadline:
                self.res.notes.append(f"replay timed out after {self.timeout_s} s")
                self.res.outcome = "error"
                return
            # nobody runs (a clone's child counts as running until its first stop is seen)
            if self.started and self.stuck is None and not self.exiting and not self._clone_in_flight() \
                    and not self.order.running(self.threads):
                ev = self._release_next(deadline)
                if ev == "abort":
                    return
            else:
                ev = self._run_fast(deadline)
                if ev == ():
                    ev = self._wait(deadline)
            if ev is None or isinstance(ev, str):
                continue
            self.cur_ev = ev
            self.progress += 1
            if self.vc is not None:
                self._table_sync(ev[1])
            if ev[0] == "n":  # a seccomp notification: a trapped syscall without a ptrace stop
                self.res.stops += 1
                if self._notified(ev[1], ev[2]) == "abort":
                    return
                continue
            wpid, status = ev[1], ev[2]
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                alive.discard(wpid)
                if wpid == pid:
                    self.res.exit_code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
                    return
                if self._thread_ended(wpid) == "abort":
                    return
                continue
            alive.add(wpid)
            self.seen.add(wpid)
            self.res.stops += 1
            if self._stop(wpid, status) == "abort":
                return

    def _release_next(self, deadline: float) -> tuple | str | None:
        """Nobody runs: release the parked thread whose event is the earliest open one. If none
        holds it, the replay cannot go on: say who should have moved (strict), or let the earliest
        parked thread go with a note (what-if replays match calls loosely anyway). Returns "abort",
        None, or a stop the compiled loop handed back after answering the released one."""
        th = self.order.turn_holder(self.threads)
        if th is None:
            first = self.order.first_open()
            if first >= 1 << 62 and not any(t.alive and t.held for t in self.threads.values()):
                return None  # nothing left to order: the live threads are on their way out
            rtid, expected, actual = stuck_report(first, self.threads, self.by_rtid, lambda e: describe(e.nr, e.args, e.ret))
            if self.strict or (th := self.order.earliest_parked(self.threads)) is None:
                self._diverge(first, rtid, "stuck", expected, actual)
                return "abort"
            if len(self.res.notes) < 40:
                self.res.notes.append(f"out of recorded order: {expected}; {actual}; thread {th.rtid} released")
        held = th.held
        assert held is not None
        if held.regs is None and held.ev is None:  # a new thread, before its first instruction
            th.held = None
            e = th.next_event()
            if e is not None and e.flags & L.KP_RSYS_NO_ENTER and e.nr in CLONES:
                self._consume(th, e)
            T.cont(held.tid)
            return None
        if held.ev is not None:
            ev = self._run_fast(deadline, cur=held.tid)  # the compiled loop answers its stop and runs on
            if ev != ():
                return ev
            if th.held is None:
                return None
        th.held = None
        regs = held.regs
        if regs is None:  # parked by the compiled loop: its registers were not read
            regs = held.ev[2] if held.ev[0] == "n" else T.get_regs(held.tid)
        return self._syscall(held.tid, th, regs, forced=True)

    def _own_table(self, tid: int, th: _Thread) -> None:
        """Only the running thread runs, so it may own the in-tracee answer table (the stubs compare
        the fs base); switched only while no answers are outstanding."""
        vc = self.vc
        if vc is not None and vc.tid != tid and not vc.gap_open and th.fs_base and self.fp is not None:
            vc.tab[V.OWNER], vc.tid, self.fp.ctx.vtid = th.fs_base, tid, tid

    def _last_ordered(self, th: _Thread) -> int:
        """Index of the thread's last replayed ordered (non-clock) event; -1 before its first."""
        i = th.pos - 1
        while i >= 0 and th.queue[i].nr in CLOCKS:
            i -= 1
        return th.queue[i].index if i >= 0 else -1

    def _thread_ended(self, tid: int) -> str | None:
        """A thread other than the main one ended: every ordered event it recorded must be done."""
        th = self.threads.get(tid)
        if th is None:
            return None
        th.alive, th.held = False, None
        if self.stuck is not None:
            return None  # killed because the replay was stuck: that is the report
        self.consumed.update(e.index for e in th.queue[th.pos:] if self._cut_off(e))  # killed in them, as recorded
        self.notif_pending.pop(tid, None)
        left = [e for e in th.queue[th.pos:] if e.nr not in CLOCKS and e.index not in self.consumed and not self._cut_off(e)]
        if left:
            e = left[0]
            self._diverge(e.index, th.rtid, "sequence", describe(e.nr, e.args, e.ret), f"thread {th.rtid} ended")
            if self.strict:
                return "abort"
        return None

    def _cut_off(self, e: Event) -> bool:
        """A call the thread never came back from: it ended with a kernel-internal restart code
        (ERESTARTSYS ... ERESTART_RESTARTBLOCK: killed in it), or it completed after a sibling's
        exit_group (killed on its way back). A replayed thread killed the same way need not reach it."""
        x = self.exit_group
        return -516 <= e.ret <= -512 or (x is not None and e.index > x.index and e.tid != x.tid)

    def _allowance(self) -> float:
        """Seconds the running thread may need beyond STUCK_S: four times its longest recorded run
        between two events (a thread that computes for seconds is not stuck)."""
        running = self.order.running(self.threads) if self.started else []
        return 4 * self.max_gap_s.get(self.threads[running[0]].rtid, 0.0) if running else 0.0

    def _stuck_running(self, waited_s: float) -> None:
        """Called by the watchdog: name the thread that did not move, where it is, what the order waits for."""
        running = self.order.running(self.threads) if self.started else []
        if not running:
            what = "before the program's exec" if not self.started else "with no thread running or released"
            self.stuck = Divergence(-1, 0, "stuck", "progress", f"no stop for {waited_s:.1f} s {what}")
            return
        tid = running[0]
        th = self.threads[tid]
        last = th.queue[th.pos - 1] if th.pos else None
        nxt = th.next_event()
        doing = _task_state(self.pid, tid)
        gap = f", recorded {(nxt.enter_ns - last.exit_ns) / 1000:.0f} us after it" if nxt and last else ""
        after = f" after event {last.index} {describe(last.nr, last.args, last.ret)}" if last else " from its start"
        expected = (f"thread {th.rtid} reaches {describe(nxt.nr, nxt.args, nxt.ret)} (event {nxt.index}){gap}"
                    if nxt else f"thread {th.rtid} ends")
        parked = ", ".join(f"thread {t.rtid} at event {n.index if (n := t.next_event()) else '-'}"
                           for t in self.threads.values() if t.alive and t.held is not None) or "none"
        self.stuck = Divergence(nxt.index if nxt else -1, th.rtid, "stuck", expected,
                                f"thread {th.rtid} (tid {tid}){after} {doing} for {waited_s:.1f} s; parked: {parked}")
        self.res.notes.append("a thread that waits for a sibling without a syscall between (a data race, a "
                              "lock-free hand-off) cannot be ordered from syscalls (replay/README.md, Threads)")

    def _run_fast(self, deadline: float, cur: int | None = None) -> tuple | None:
        """Let the compiled loop run the threads from ``cur`` (default: the running one), answering
        planned events and handing over between threads in the recorded order (kp_run_threads).

        Returns the event it handed back (see _wait), () when Python should wait itself, None to
        loop again."""
        fp = self.fp
        if fp is None or self.mem is None or not self.started or fp.out_shift.extra:
            return ()
        if cur is None:
            running = self.order.running(self.threads)
            if len(running) != 1:
                return ()
            cur = running[0]
        if cur not in self.slot_of:
            return ()
        released = self.threads[cur].held
        if released is not None and released.ev is None:
            return ()  # a new thread's start: Python
        for tid, slot in self.slot_of.items():
            th = self.threads[tid]
            p = fp.plans.get(th.rtid)
            if p is None or not th.alive or th.pos >= len(th.queue):
                fp.thr[slot].tid, fp.thr[slot].parked, fp.thr[slot].end, fp.thr[slot].pos = tid, 0, 0, 0
                continue
            end = fp.plan(p, th.pos, 1 << 62, self.emulated, self.sockets, self.fd_version)
            # a thread released now runs up to the next thread's event after its own pending one
            last = th.queue[th.pos].index if tid == cur and th.held is not None else self._last_ordered(th)
            fp.slot(slot, tid, p, th, end, last, th.held.ev if th.held is not None else None)
        t = fp.thr[self.slot_of[cur]]
        if t.tid != cur or t.pos >= t.end:
            return ()  # nothing planned for it: Python waits for (or answers) its stop
        self._own_table(cur, self.threads[cur])
        fp.run_threads(self.slot_of[cur], len(self.slots), self.pid, self.mem.fd, deadline)
        c = fp.ctx
        for slot, done, vdone in fp.segments():
            th = self.threads[self.slots[slot]]
            self._caught_up(th, fp.plans[th.rtid], th.pos, done, vdone)
        self.res.stops += int(c.seen)
        if c.nreq:
            for fd, rec_ns, rep_ns in fp.requests():
                self.res.requests.append(Request(fd, rec_ns / 1e6, rep_ns / 1e6))
        for tid, slot in self.slot_of.items():
            t, th = fp.thr[slot], self.threads[tid]
            if t.tid != tid or not th.alive:
                continue
            th.vt, th.prev_exit, th.arrival = t.vt, t.prev_exit, t.arrival
            if t.parked:
                if t.parks:  # parked by the loop at a stop Python has not seen (the last one, if several)
                    ev = fp.parked_event(t)
                    th.held = Parked(tid, None, ev)
                    if ev[0] == "n":
                        self.notif_pending[tid] = ev[2].id
                    else:
                        self.notif_pending.pop(tid, None)
            elif th.held is not None and th.held.ev is not None:
                th.held = None  # released in C
                self.notif_pending.pop(tid, None)
        if c.err:
            raise OSError(int(c.err), "replay hot path: ptrace/memory access failed")
        if c.has_stop:
            ev = fp.event()
            if released is not None and ev[1] == cur and not fp.segments():
                self.res.stops -= 1  # the released thread's stop, handed back untouched: counted when it came
            return ev
        if released is not None and self.threads[cur].held is released and not c.nseg:
            return ()  # nothing planned for the released thread: Python answers its stop
        return None

    def _caught_up(self, th: _Thread, p: F.ThreadPlan, pos: int, done: int, vdone: int) -> None:
        """Bookkeeping for events the compiled loop answered: consumed, outputs (in order)."""
        idx = p.index_list[pos : pos + done]
        self.consumed.update(idx)
        th.pos += done
        self.res.events_replayed += done
        self.res.tracee_answers += vdone  # answered in the tracee: no stop
        lo, hi = np.searchsorted(p.writes, (pos, pos + done)).tolist()
        if hi - lo > 32:
            sel = np.arange(lo, hi)
            sel = sel[p.ops[p.writes[sel], F.KIND] == F.K_WRITE]  # writes answered as outputs (emulated fd)
            fds = p.ops[p.writes[sel], F.FD]
            for fd in np.unique(fds).tolist():
                chunks = [p.write_data[i] for i in sel[fds == fd].tolist()]
                self.out_bytes.setdefault(_chan_key(fd), hashlib.sha256()).update(b"".join(chunks))
        else:  # a short run (between hand-overs): plain Python is cheaper than numpy here
            for i in range(lo, hi):
                op = p.ops[p.writes[i]]
                if op[F.KIND] == F.K_WRITE:
                    self.out_bytes.setdefault(_chan_key(int(op[F.FD])), hashlib.sha256()).update(p.write_data[i])

    def _wait(self, deadline: float) -> tuple | None:
        """Block for the next ptrace stop ("p", tid, status) or notification ("n", tid, regs)."""
        if self.fp is None or self.fp.ctx.notif_fd < 0:
            return ("p", *os.waitpid(-1, T.WALL))
        return self.fp.wait(max(0, int((deadline - time.monotonic()) * 1000)) + 1)

    def _poll(self) -> tuple | None:
        if self.fp is None or self.fp.ctx.notif_fd < 0:
            wpid, status = os.waitpid(-1, T.WALL | os.WNOHANG)
            return ("p", wpid, status) if wpid else None
        return self.fp.wait(0)

    def _notified(self, tid: int, regs: F.NotifRegs) -> str | None:
        """A notified syscall: answered like a seccomp stop, through the listener instead of ptrace."""
        if not self.started:
            self.fp.respond(regs.id, 0, run_it=True)  # type: ignore[union-attr]
            return None
        th = self.threads.get(tid)
        if th is None:
            return self._unsupported(f"syscall from unknown thread {tid}")
        self.notif_pending[tid] = regs.id
        return self._syscall(tid, th, regs)

    def _stop(self, tid: int, status: int) -> str | None:
        sig = os.WSTOPSIG(status)
        event = status >> 16
        if event == T.EVENT_EXEC:
            if self.vc is not None and self.fp is not None:  # the new image has neither table nor stubs
                self.fp.ctx.vtab = None
                self.vc.close()
                self.vc, self.vc_state = None, "want"
            self.mem = T.Memory(self.pid)
            patched = T.patch_vdso(self.pid, self.mem)
            self.res.notes.append(f"vDSO patched to trap: {', '.join(patched) or 'none found'}")
            self.started = True
            self.threads[tid] = _Thread(self.log.tgid, self.by_rtid.get(self.log.tgid, []), vt=self.log.exec_ns,
                                        prev_exit=self.log.exec_ns)
            self._add_slot(tid)
            self.tid_of = {tid: self.log.tgid}
            T.cont(tid)
            return None
        if event in (T.EVENT_FORK, T.EVENT_VFORK):
            self.seen.add(T.event_msg(tid))
            return self._unsupported("the process forks a child: replay follows one process")
        if event == T.EVENT_CLONE:
            child, rtid = T.event_msg(tid), self.clone_of.pop(tid, None)
            if rtid is None:
                self.res.notes.append(f"thread {child} has no recorded counterpart")
                rtid = -child
            if child in self.unmapped:
                self.unmapped.discard(child)
                self._new_thread(child, rtid)
            else:
                self.child_rtid[child] = rtid
            T.cont(tid)
            return None
        if event == T.EVENT_SECCOMP:
            if not self.started:
                T.cont(tid)
                return None
            th = self.threads.get(tid)
            if th is None:
                return self._unsupported(f"syscall from unknown thread {tid}")
            regs = T.get_regs(tid)
            if self.vc_state == "want" and tid == self.pid and regs.fs_base:
                return self._table_inject(tid, th, regs)
            return self._syscall(tid, th, regs)
        if sig == (signal.SIGTRAP | 0x80):  # syscall-exit stop we asked for
            th = self.threads.get(tid)
            cb = th.pending_exit if th else None
            if th is not None:
                th.pending_exit = None
            if cb is not None:
                r = cb(tid, T.get_regs(tid))
                if r == "abort":
                    return r
            T.cont(tid)
            return None
        if sig == signal.SIGSTOP and tid not in self.threads and self.started:
            if tid in self.child_rtid:
                self._new_thread(tid, self.child_rtid.pop(tid))  # parked before its first instruction
            else:
                self.unmapped.add(tid)  # mapped (and parked) at its parent's clone stop
            return None
        if sig == signal.SIGSEGV:
            regs = T.get_regs(tid)
            mem = self.mem or T.Memory(tid)  # before exec: the tracer's own forked child reading a clock
            code = mem.read(regs.rip, 3)
            if mem is not self.mem:
                mem.close()
            if code[:2] == b"\x0f\x31" or code == b"\x0f\x01\xf9":
                return self._rdtsc(tid, regs, 2 if code[:2] == b"\x0f\x31" else 3)
        if sig == signal.SIGTRAP:
            T.cont(tid)
            return None
        T.cont(tid, sig)
        return None

    def _table_inject(self, tid: int, th: _Thread, regs) -> None:
        """Make the stopped thread map the answer table's pages instead of this syscall, then
        restart the syscall unchanged (its next seccomp stop is handled as usual)."""
        saved = type(regs).from_buffer_copy(regs)
        fs_base = regs.fs_base
        libc = V.libc_mapping(self.pid)
        V.mmap_call(regs, max(0, libc[0] - V.SIZE - (1 << 24)) & ~0xFFF if libc else 0)
        T.set_regs(tid, regs)
        self.vc_state = "injecting"

        def mapped(t: int, r) -> None:
            V.restart(saved)
            T.set_regs(t, saved)
            addr = r.rax
            if addr >= 1 << 63 or self.fp is None or self.mem is None:
                self.vc_state = "off"
                self.res.notes.append(f"answer table not mapped into the tracee (mmap: {addr - (1 << 64)}): "
                                      "every call traps")
                return None
            try:
                self.vc = V.AnswerTable.install(self.fp.lib, self.pid, tid, fs_base, addr, self.mem, saved.rip)
            except OSError as e:  # e.g. /proc/<pid>/map_files needs CAP_SYS_ADMIN
                self.vc_state = "off"
                self.res.notes.append(f"no answers inside the tracee ({e}): every call traps")
                return None
            self.fp.ctx.vtab, self.fp.ctx.vtid = self.vc.table_address, tid
            th.fs_base = fs_base
            self.vc_state = "on"
            self.res.answer_table = True
            self.res.notes.append("answered in the tracee: vDSO clock reads" + (
                f", libc {', '.join(self.vc.wrappers)}" if self.vc.wrappers else ""))
            return None

        th.pending_exit = mapped
        T.to_exit(tid)

    def _table_sync(self, tid: int) -> None:
        """A stop of the table's owner that the compiled loop did not see: account the events the
        tracee answered itself since its last stop, in order, as if each had trapped."""
        vc, fp = self.vc, self.fp
        if vc is None or fp is None or tid != vc.tid or not vc.gap_open:
            return
        th = self.threads[tid]
        p = fp.plans[th.rtid]
        pos = th.pos
        done = fp.sync(p, th, pos)
        if done:
            self._caught_up(th, p, pos, done, done)
            if fp.ctx.nreq:
                for fd, rec_ns, rep_ns in fp.requests():
                    self.res.requests.append(Request(fd, rec_ns / 1e6, rep_ns / 1e6))

    def _rdtsc(self, tid: int, regs, length: int) -> None:
        """rdtsc faults (PR_TSC_SIGSEGV): answer a synthetic counter from virtual time, count it.

        The recording cannot see rdtsc, so its values are not reproduced; programs that only use it
        for statistics (ld.so does) replay fine, ones that branch on it may diverge (noted)."""
        self.rdtsc_count = getattr(self, "rdtsc_count", 0) + 1
        th = self.threads.get(tid)
        tsc = (th.vt if th else 0) + self.rdtsc_count
        regs.rax, regs.rdx = tsc & 0xFFFFFFFF, (tsc >> 32) & 0xFFFFFFFF
        if length == 3:
            regs.rcx = 0
        regs.rip += length
        T.set_regs(tid, regs)
        T.cont(tid)
        return None

    def _add_slot(self, tid: int) -> None:
        """Give a thread a slot in the compiled loop (which then hands over to it by itself)."""
        if self.fp is None or len(self.slots) >= F.MAX_THREADS or tid in self.slot_of:
            return
        if not self.slots:  # first thread: the order arrays, once per replay
            n = len(self.log.events)
            nxt = np.full(n + 1, 1 << 62, dtype=np.int64)
            for i, j in self.next_other.items():
                nxt[i + 1] = j
            self.owner = np.full(max(n, 1), -1, dtype=np.int64)
            self.fp.set_order(nxt, self.owner)
        slot = len(self.slots)
        self.slots.append(tid)
        self.slot_of[tid] = slot
        idx = [e.index for e in self.threads[tid].queue]
        if idx:
            self.owner[np.array(idx, dtype=np.int64)] = slot

    def _clone_in_flight(self) -> bool:
        return bool(self.clone_of or self.child_rtid or self.unmapped)

    def _new_thread(self, tid: int, rtid: int) -> None:
        """A clone's child, ``rtid`` in the recording: parked until its recorded start is next. Its
        clock starts where its parent's was at the clone."""
        parent_vt = max((t.vt for t in self.threads.values()), default=0)
        clone_exit, vt = self.spawned.get(rtid, (parent_vt, parent_vt))
        self.threads[tid] = _Thread(rtid, self.by_rtid.get(rtid, []), vt=vt, prev_exit=clone_exit,
                                    held=Parked(tid, None), fs_base=T.get_regs(tid).fs_base)
        self._add_slot(tid)
        self.tid_of[tid] = rtid

    def _unsupported(self, why: str) -> str:
        self.res.outcome = "unsupported"
        self.res.notes.append(f"unsupported: {why}")
        return "abort"

    # -- one trapped syscall ---------------------------------------------------------------------
    def _syscall(self, tid: int, th: _Thread, regs, forced: bool = False) -> str | None:
        nr = regs.orig_rax
        args = (regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9)
        nxt = self._next(th, nr)
        if nxt is not None and not forced and nr not in CLOCKS and not self.order.is_turn(nxt):
            # released by _release_next when its event is the earliest open one
            th.held = Parked(tid, regs, self.cur_ev if self.cur_ev[1] == tid else None)
            return None
        if nr in CLOCKS:
            return self._clock(tid, th, regs, nr, args, nxt)
        if nxt is None or nxt.nr != nr or (nr in KEYED and (nxt.args[0] & 0xFFFFFFFF) != (args[0] & 0xFFFFFFFF)):
            exp = describe(nxt.nr, nxt.args, nxt.ret) if nxt else "end of the recorded stream"
            self._diverge(nxt.index if nxt else -1, th.rtid, "sequence", exp, describe(nr, args))
            if self.strict:
                return "abort"
            return self._lenient(tid, th, regs, nr, args)
        self._consume(th, nxt)
        return self._apply(tid, th, regs, nr, args, nxt)

    def _next(self, th: _Thread, nr: int) -> Event | None:
        """The thread's next expected event; recorded clock reads the replay does not make are skipped."""
        while th.pos < len(th.queue):
            e = th.queue[th.pos]
            if e.nr in CLOCKS and nr not in CLOCKS:
                th.pos += 1  # the replay did not make this read: keep virtual time on the timeline
                self.skipped_clock_reads += 1
                th.vt += max(0, e.enter_ns - self.pred_exit.get(e.index, th.prev_exit)) + e.dur_ns
                th.prev_exit = e.exit_ns
                continue
            return e
        return None

    def _consume(self, th: _Thread, e: Event) -> None:
        th.pos += 1
        self.consumed.add(e.index)
        self.res.events_replayed += 1
        delay = sum(i.delay_ns(e, self) for i in self.injections)
        dur = e.dur_ns
        if any(i.removes(e) for i in self.injections):
            dur = 0
        think = max(0, e.enter_ns - self.pred_exit.get(e.index, th.prev_exit))
        fd = e.args[0] & 0xFFFFFFFF
        if e.nr in INPUT_WAITS and self._is_external(e) and e.dur_ns > BLOCKED_NS:
            # The call waited for the peer, so the peer sent after our last output on this fd:
            # closed loop, its send moves with that output. Virtual time cannot run backwards.
            th.arrival = e.exit_ns + self.out_shift.get(fd, 0)
            th.vt = max(th.vt + think, th.arrival) + delay
        else:
            th.arrival = e.exit_ns + (th.vt - th.prev_exit)
            th.vt = th.vt + think + dur + delay
        if e.nr in WRITES:
            self.out_shift[fd] = th.vt - e.exit_ns
        th.prev_exit = e.exit_ns

    def _is_external(self, e: Event) -> bool:
        return (e.args[0] & 0xFFFFFFFF) in self.sockets or e.nr in EXTERNAL_NRS

    # -- applying a matched event ----------------------------------------------------------------
    def _skip(self, tid: int, regs, ret: int) -> None:
        nid = self.notif_pending.pop(tid, None)
        if nid is not None:
            self.fp.respond(nid, ret)  # type: ignore[union-attr]
            return
        regs.orig_rax = (1 << 64) - 1
        regs.rax = ret & ((1 << 64) - 1)
        T.set_regs(tid, regs)
        T.cont(tid)

    def _passthrough(self, tid: int) -> None:
        nid = self.notif_pending.pop(tid, None)
        if nid is not None:
            self.fp.respond(nid, 0, run_it=True)  # type: ignore[union-attr]
            return
        T.cont(tid)

    def _apply(self, tid: int, th: _Thread, regs, nr: int, args: tuple[int, ...], e: Event) -> str | None:
        """Carry out the matched event ``e`` by the syscall's rule (schemas/syscall_table.py)."""
        fd = args[0] & 0xFFFFFFFF
        rule = RULE.get(nr, Rule.PASS)
        if rule is Rule.OPEN:
            return self._open(tid, th, regs, nr, args, e)
        if rule is Rule.PAIR:
            return self._fd_pair(tid, th, regs, nr, args, e)
        if rule is Rule.NEW_FD or (rule is Rule.DUP and fd in self.emulated) or (
            nr == NR_FCNTL and args[1] in FCNTL_DUPFD and fd in self.emulated
        ):
            return self._placeholder(tid, th, regs, nr, args, e)
        if rule is Rule.CLONE:
            if e.ret > 0:
                self.clone_of[tid] = e.ret
                self.spawned[e.ret] = (e.exit_ns, th.vt)
            if nr == NR_CLONE and not args[0] & CLONE_THREAD or nr == NR_CLONE3:
                flags = args[0] if nr == NR_CLONE else self.mem.u64(args[0]) if self.mem else 0
                if not flags & CLONE_THREAD:
                    return self._unsupported("the process forks a child: replay follows one process")
        elif rule is Rule.CLOSE:
            self.emulated.discard(fd)  # an emulated fd's close runs too: it closes the placeholder
            self.sockets.discard(fd)
            self.fd_version += 1
            self.fd_path.pop(fd, None)
        elif rule is Rule.MMAP:  # a file mapping
            fd = args[4] & 0xFFFFFFFF
            if fd in self.emulated:
                return self._unsupported(f"mmap of recorded fd {fd}: the file's contents are not in the log")
        elif rule is Rule.EXIT_GROUP:
            self.exiting = True
        elif futex_runs_for_real(nr, args):
            pass
        elif nr in WRITES and fd in self.emulated:
            return self._write(tid, th, regs, nr, args, e)
        elif nr in READS and fd in self.emulated:
            self._fill_read(nr, args, e)
            self._mark_input(fd, th, e)
            self._skip(tid, regs, e.ret)
            return None
        elif nr in ALWAYS_ANSWERED or (fd in self.emulated and (nr in KEYED or rule is Rule.ON_FD)):
            self._fill_generic(nr, args, e)
            self._skip(tid, regs, e.ret)
            return None
        self._passthrough(tid)
        return None

    def _open(self, tid: int, th: _Thread, regs, nr: int, args: tuple[int, ...], e: Event) -> str | None:
        assert self.mem is not None
        path_arg, flags = (args[1], args[2]) if nr == NR_OPENAT else (args[0], args[1])
        path = self.mem.cstr(path_arg).decode(errors="replace")
        writes = (flags & O_ACCMODE) != 0 or flags & (O_CREAT | O_TRUNC | O_APPEND)
        if e.ret < 0:
            self._skip(tid, regs, e.ret)
            return None
        if not writes and os.path.exists(path) and not _char_device(path):
            def check(t: int, r) -> str | None:
                got = r.rax - (1 << 64) if r.rax >= 1 << 63 else r.rax
                if got != e.ret:
                    self._diverge(e.index, th.rtid, "fd", f"open {path} -> fd {e.ret}", f"fd {got}")
                    return "abort" if self.strict else None
                self.fd_path[got] = path
                return None
            th.pending_exit = check
            T.to_exit(tid)
            return None
        self.fd_path[e.ret] = path
        return self._placeholder(tid, th, regs, nr, args, e, path)

    def _fd_pair(self, tid: int, th: _Thread, regs, nr: int, args: tuple[int, ...], e: Event) -> str | None:
        """Make the pipe/socketpair for real, check it got the recorded fd numbers, then emulate both."""
        if e.ret < 0:
            self._skip(tid, regs, e.ret)
            return None
        recorded = struct.unpack("<ii", e.regions.get(0, b"\xff" * 8)[:8])

        def check(t: int, r) -> str | None:
            assert self.mem is not None
            got = struct.unpack("<ii", self.mem.read(args[FD_PAIRS[nr]], 8))
            if got != recorded:
                self._diverge(e.index, th.rtid, "fd", f"{sysname(nr)} -> fds {recorded}", f"fds {got}")
                return "abort" if self.strict else None
            for fd in got:
                self.emulated.add(fd)
                self.fd_path[fd] = f"{sysname(nr)}:{fd}"
                if nr == NR_SOCKETPAIR:
                    self.sockets.add(fd)
            self.fd_version += 1
            return None

        th.pending_exit = check
        T.to_exit(tid)
        return None

    def _placeholder(self, tid: int, th: _Thread, regs, nr: int, args, e: Event, path: str = "") -> str | None:
        """Run eventfd2 instead, so the fd number is taken in the tracee; check it is the recorded one."""
        if e.ret < 0:
            self._skip(tid, regs, e.ret)
            return None
        saved = (regs.rdi, regs.rsi)
        regs.orig_rax = NR_EVENTFD2
        regs.rdi, regs.rsi = 0, SOCK_CLOEXEC if (nr in (NR_SOCKET, NR_ACCEPT4) and args[1] & SOCK_CLOEXEC) else 0
        T.set_regs(tid, regs)
        if nr in ACCEPTS:
            self._fill_generic(nr, args, e)
        if nr == NR_SOCKET or nr in ACCEPTS:
            self.sockets.add(e.ret)
        self.emulated.add(e.ret)
        self.fd_version += 1

        def check(t: int, r) -> str | None:
            got = r.rax - (1 << 64) if r.rax >= 1 << 63 else r.rax
            r.rdi, r.rsi = saved
            T.set_regs(t, r)
            if got != e.ret:
                self._diverge(e.index, th.rtid, "fd", f"{sysname(nr)} -> fd {e.ret}", f"fd {got}")
                return "abort" if self.strict else None
            if nr in ACCEPTS:
                self._mark_input(e.ret, th, e)
            return None

        th.pending_exit = check
        T.to_exit(tid)
        return None

    def _mark_input(self, fd: int, th: _Thread, e: Event) -> None:
        key = fd if e.nr not in ACCEPTS else e.ret
        if key in self.handoff_fds:
            self.handoff.setdefault(key, collections.deque()).append((th.arrival, e.exit_ns))
            return
        if key not in th.inputs:
            self.pending.add(key, 1)
        th.inputs[key] = (th.arrival, e.exit_ns)

    def _write(self, tid: int, th: _Thread, regs, nr: int, args, e: Event) -> str | None:
        assert self.mem is not None
        fd = args[0] & 0xFFFFFFFF
        actual = self._gather(nr, args)
        n = min(len(actual), e.ret) if e.ret >= 0 else len(actual)
        expected = e.regions.get(0, b"")[: max(e.ret, 0)]
        # The log holds card data masked (per stream, replay/redact.py): where it has '*', any byte
        # matches; what is hashed or shown is never less masked than the log.
        same = matches_logged(actual[:n], expected[:n]) and not (e.ret >= 0 and len(actual) < e.ret)
        if not same:
            self._diverge(e.index, th.rtid, "bytes", _show(expected),
                          _show(overlay_logged(actual[: max(n, len(actual))], expected)))
            if self.strict:
                return "abort"
        out = expected[:n] if same else overlay_logged(actual[:n], expected)
        self.out_bytes.setdefault(_chan_key(fd), hashlib.sha256()).update(out if e.ret >= 0 else b"")
        req = self._request_answered(th, fd)
        if req is not None and fd in self.sockets:
            vt_in, rec_in = req
            self.res.requests.append(Request(fd, (e.enter_ns - rec_in) / 1e6, (th.vt - e.dur_ns - vt_in) / 1e6))
        self._skip(tid, regs, e.ret)
        return None

    def _request_answered(self, th: _Thread, fd: int) -> tuple[int, int] | None:
        """(replay, recorded) arrival of the request an output on ``fd`` answers: the thread's own
        last input there, else (a reply by a worker to what a reader thread read) the oldest one
        another thread holds."""
        if fd in self.handoff_fds:
            if fd not in self.sockets:
                return None
            q = self.handoff.get(fd)
            if q:
                self.handoff_last[fd] = q.popleft()
            # nothing newer: one read carried several requests (answered one by one), all of which
            # arrived with it
            return self.handoff_last.get(fd)
        req = th.inputs.pop(fd, None)
        if req is None and fd in self.sockets and self.pending.get(fd) > 0:
            holders = [t for t in self.threads.values() if t is not th and fd in t.inputs]
            if holders:
                oldest = min(holders, key=lambda t: t.inputs.peek(fd)[1])
                req = oldest.inputs.pop(fd, None)
        if req is not None:
            self.pending.add(fd, -1)
        return req

    def _gather(self, nr: int, args) -> bytes:
        assert self.mem is not None
        kind = WRITES[nr]
        if kind == 1:
            return self.mem.read(args[1], min(args[2], 1 << 24))
        if kind == -1:
            iov, cnt = args[1], args[2]
        else:
            hdr = self.mem.read(args[1], 56)
            iov, cnt = struct.unpack_from("<QQ", hdr, 16)
        return b"".join(self.mem.read(b, min(n, 1 << 24)) for b, n in self.mem.iovecs(iov, cnt))

    def _fill_read(self, nr: int, args, e: Event) -> None:
        assert self.mem is not None
        data = e.regions.get(0, b"")[: max(e.ret, 0)]
        kind = READS[nr]
        if kind == 1:
            self.mem.write(args[1], data)
            if nr == NR_RECVFROM and args[4] and args[5] and 1 in e.regions:
                self.mem.write(args[4], e.regions[1])
                self.mem.write(args[5], e.regions.get(2, b"")[:4])
            return
        if kind == -1:
            iov, cnt = args[1], args[2]
        else:
            hdr = self.mem.read(args[1], 56)
            name, _nl, iov, cnt = struct.unpack_from("<QI4xQQ", hdr, 0)
            if 2 in e.regions:  # namelen, controllen, flags as the kernel left them
                rec = e.regions[2]
                self.mem.write(args[1] + 8, rec[8:12])
                self.mem.write(args[1] + 40, rec[40:48])
                self.mem.write(args[1] + 48, rec[48:52])
            if name and 1 in e.regions:
                self.mem.write(name, e.regions[1])
        off = 0
        for base, n in self.mem.iovecs(iov, cnt):
            if off >= len(data):
                break
            self.mem.write(base, data[off : off + n])
            off += n

    def _fill_generic(self, nr: int, args, e: Event) -> None:
        """Write each recorded out-region back where this syscall's arguments point."""
        assert self.mem is not None
        if e.ret < 0:
            return
        for region, arg in TARGETS.get(nr, {}).items():
            addr = args[arg]
            if addr and region in e.regions:
                self.mem.write(addr, e.regions[region])

    def _clock(self, tid: int, th: _Thread, regs, nr: int, args, nxt: Event | None) -> str | None:
        assert self.mem is not None
        if nxt is not None and nxt.nr == nr and (nr != NR_CLOCK_GETTIME or nxt.args[0] == args[0]):
            self._consume(th, nxt)
            shift = th.vt - nxt.exit_ns
            if nr == NR_TIME:
                val = nxt.ret + shift // 1_000_000_000
                if args[0]:
                    self.mem.write(args[0], struct.pack("<q", val))
                self._skip(tid, regs, val)
                return None
            rec = nxt.regions.get(0, b"\0" * 16)
            sec, sub = struct.unpack("<qq", rec[:16])
            unit = 1_000_000_000 if nr == NR_CLOCK_GETTIME else 1_000_000
            total = sec * unit + sub + (shift if nr == NR_CLOCK_GETTIME else shift // 1000)
            if args[1 if nr == NR_CLOCK_GETTIME else 0]:
                self.mem.write(args[1 if nr == NR_CLOCK_GETTIME else 0], struct.pack("<qq", total // unit, total % unit))
            self._skip(tid, regs, nxt.ret)
            return None
        # not in the log (e.g. gettimeofday through a glibc IFUNC): synthesize from the replay clock
        self.res.synthesized_clock_reads += 1
        if len(self.res.notes) < 20:
            self.res.notes.append(f"clock read {sysname(nr)}({args[0]}) not in the log (next expected: "
                                  f"{describe(nxt.nr, nxt.args) if nxt else 'none'}): synthesized")
        th.synth += 1  # strictly increasing, without moving the virtual clock off the recorded timeline
        clk = args[0] if nr == NR_CLOCK_GETTIME else 0
        now = th.vt + th.synth + (self.log.clock_offset_ns if nr != NR_CLOCK_GETTIME or clk in WALL_CLOCKS else 0)
        if nr == NR_CLOCK_GETTIME:
            self.mem.write(args[1], struct.pack("<qq", now // 1_000_000_000, now % 1_000_000_000))
            self._skip(tid, regs, 0)
        elif nr == NR_GETTIMEOFDAY:
            if args[0]:
                self.mem.write(args[0], struct.pack("<qq", now // 1_000_000_000, now % 1_000_000_000 // 1000))
            self._skip(tid, regs, 0)
        else:
            if args[0]:
                self.mem.write(args[0], struct.pack("<q", now // 1_000_000_000))
            self._skip(tid, regs, now // 1_000_000_000)
        return None

    def _lenient(self, tid: int, th: _Thread, regs, nr: int, args) -> str | None:
        """What-if mode: match the next recorded event on the same channel (syscall and fd)."""
        fd = args[0] & 0xFFFFFFFF
        for j in range(th.pos, len(th.queue)):
            e = th.queue[j]
            if e.index in self.consumed or e.nr != nr:
                continue
            if nr in KEYED and (e.args[0] & 0xFFFFFFFF) != fd:
                continue
            th.queue.insert(th.pos, th.queue.pop(j))
            self._consume(th, e)
            return self._apply(tid, th, regs, nr, args, e)
        if nr in WRITES and fd in self.emulated:
            data = self._gather(nr, args)
            self.out_bytes.setdefault(_chan_key(fd), hashlib.sha256()).update(mask_same_length(data)[0])
            self._skip(tid, regs, len(data))
            return None
        self._passthrough(tid)
        return None

    def _diverge(self, index: int, rtid: int, kind: str, expected: str, actual: str) -> None:
        if self.res.outcome in ("identical", "incomplete-log"):
            self.res.outcome = "diverged"
        if len(self.res.divergences) < MAX_DIVERGENCES:
            self.res.divergences.append(Divergence(index, rtid, kind, expected, actual))

    def _verdict(self) -> None:
        r = self.res
        if self.expected:
            r.recorded_span_ms = (self.expected[-1].exit_ns - self.log.exec_ns) / 1e6
            r.replay_span_ms = (max((t.vt for t in self.threads.values()), default=self.log.exec_ns)
                                - self.log.exec_ns) / 1e6
        if self.deadline_ms is not None:
            for q in r.requests:
                q.timed_out = q.replay_ms > self.deadline_ms
            slow = [q for q in r.requests if q.timed_out]
            r.verdict = (f"timeout: {len(slow)} of {len(r.requests)} requests over {self.deadline_ms:g} ms "
                         f"(worst {max(q.replay_ms for q in slow):.1f} ms)" if slow else
                         f"pass: {len(r.requests)} requests within {self.deadline_ms:g} ms")


def _char_device(path: str) -> bool:
    """/dev/urandom and friends: what they gave is an input like a socket's (answered from the
    log); read for real here, a SecureRandom or a session key would differ."""
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


def _task_state(pid: int, tid: int) -> str:
    """What a tracee thread is doing, from /proc: blocked in which syscall, or running where."""
    try:
        with open(f"/proc/{pid}/task/{tid}/syscall") as f:
            fields = f.read().split()
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "(gone)"
    if fields and fields[0].lstrip("-").isdigit() and int(fields[0]) >= 0:
        nr, args = int(fields[0]), tuple(int(a, 16) for a in fields[1:7])
        return f"blocked in {describe(nr, args)} in the kernel (state {state})"
    return f"running in user space (state {state}) without reaching a syscall"


def _show(b: bytes, limit: int = 120) -> str:
    text = b[:limit].decode("utf-8", "backslashreplace")
    return repr(text) + (f"... ({len(b)} bytes)" if len(b) > limit else "")


def path_matches(pattern: str, path: str) -> bool:
    return fnmatch.fnmatch(path, pattern)
