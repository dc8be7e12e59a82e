"""Replay one recorded process under ptrace: inputs from the log, outputs compared, virtual time.

The engine runs the tracee and dispatches its stops; the rest has one module per concern:

* rules.py: what a trapped syscall matched to its recorded event gets, by its rule in the syscall
  table (schemas/syscall_table.py): emulated fds answered from the log, outputs compared, fd
  numbers kept as recorded, real files passed through;
* vclock.py: each thread's virtual clock and the clock reads answered from it (the vDSO is patched
  to trap);
* order.py and threads.py: threads run one at a time in the recorded order; a thread that stops
  at a syscall whose recorded event is not the earliest open one is parked, and the parked thread
  holding that event is released when nobody runs; one that still cannot move is reported
  (replay/watchdog.py), never waited for;
* session.py: the state of one run and its result.

Speed: runs of events the log fully decides are answered by a compiled loop (fastpath.c, via
fastpath.py), the hottest syscalls as seccomp notifications, and where possible inside the tracee
without any stop (intracee.py: libc's hot wrappers and the vDSO clock call stubs that answer from a
table the compiled loop fills); every other stop comes here.
"""

from __future__ import annotations

import bisect
import fnmatch
import gc
import hashlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from kprobe.replay import fastpath as F
from kprobe.replay import intracee as V
from kprobe.replay import rules, threads, vclock
from kprobe.replay import tracee as T
from kprobe.replay.inject import Injection
from kprobe.replay.log import Event, ProcessLog
from kprobe.replay.order import Parked, ThreadOrder, stuck_report
from kprobe.replay.order import Thread as _Thread
from kprobe.replay.seccomp import trapped
from kprobe.replay.session import Divergence, Prepared, ReplayResult, Request, Session, chan_key
from kprobe.replay.syscall_sets import (
    ALWAYS_ANSWERED,
    BARRIERS,
    CLOCKS,
    CLONES,
    EXTERNAL_NRS,
    FCNTL_DUPFD,
    FUTEX_KERNEL_WRITES,
    INPUT_WAITS,
    KEYED,
    NR_EXIT_GROUP,
    ON_FD,
    READS,
    TARGETS,
    WRITES,
    describe,
)
from kprobe.replay.threads import STUCK_S
from kprobe.replay.vclock import BLOCKED_NS
from kprobe.replay.watchdog import Watchdog
from kprobe.schemas import layouts as L

__all__ = ["Divergence", "ReplayEngine", "ReplayResult", "Request", "path_matches"]


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


def _recorded_outputs(expected: list[Event]) -> dict[str, str]:
    hashes: dict[str, hashlib._Hash] = {}
    for e in expected:
        if e.nr in WRITES and e.ret > 0:
            hashes.setdefault(chan_key(e.args[0]), hashlib.sha256()).update(e.regions.get(0, b"")[: e.ret])
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
    # what-if: unmatched calls with effects outside the process are refused (Session.guard); None runs them
    guard: Callable[[Session, int, int, tuple[int, ...]], str | None] | None = None
    s: Session = field(init=False, repr=False)     # the state of the run in progress (session.py)

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
        res = ReplayResult("identical", len(prep.expected), 0)
        if log.replayable_until < len(log.events):
            res.notes.append(f"log complete up to event {log.replayable_until} only: {log.problem}")
        res.recorded_outputs = dict(prep.recorded_outputs)
        by_thread = {rtid: list(q) for rtid, q in prep.by_thread.items()}  # lenient matching reorders them
        s = self.s = Session(log, self.strict, self.injections, self.guard, prep, by_thread,
                             prep.exit_group, res,
                             ThreadOrder(prep.unconsumed))
        s.fp = self._fast_path(by_thread)
        s.pending = s.fp.pending if s.fp else F.Pending()
        s.out_shift = s.fp.out_shift if s.fp else F.OutShift()
        t0 = time.monotonic()
        notify = bool(s.fp and self.notify)
        dog = Watchdog(STUCK_S, lambda: (s.progress, s.fp.ctx.steps if s.fp else 0), lambda: threads.allowance(s),
                       lambda waited: threads.stuck_running(s, waited),
                       lambda: s.pid and os.kill(s.pid, signal.SIGKILL)).start()
        try:
            pid, listener = T.spawn(self.argv, self.env, self.cpu, notify=F.NOTIFIED if notify else frozenset())
        except BaseException:
            dog.stop()
            raise
        res.hot_syscalls = "seccomp-notify" if listener >= 0 else "ptrace"
        if notify and listener < 0:
            res.notes.append("another thread of this process could take the SIGCHLD of a ptrace stop: "
                             "hot syscalls use ptrace stops, not seccomp notifications")
        if s.fp:
            s.fp.ctx.notif_fd = listener
        s.pid = pid
        s.vc_state = "want" if s.fp and self.in_tracee and V.supported() else "off"
        try:
            self._loop(pid)
            if s.vc is not None and s.vc.tid in s.threads:
                # answers the table's owner took before the process ended (its own exit was not
                # necessarily reported before the main thread's)
                self._table_sync(s.vc.tid)
        finally:
            dog.stop()
            self._reap(pid)
            if s.mem:
                s.mem.close()
            if s.vc and s.fp:
                s.fp.ctx.vtab = None
                s.vc.close()
            if s.fp:
                s.fp.close()
        res.wall_s = time.monotonic() - t0
        res.fast_events = s.fp.handled if s.fp else 0
        if s.stuck is not None:
            s.diverge(s.stuck.index, s.stuck.tid, s.stuck.kind, s.stuck.expected, s.stuck.actual)
        res.outputs = {k: h.hexdigest() for k, h in s.out_bytes.items()}
        for k in res.recorded_outputs:
            res.outputs.setdefault(k, hashlib.sha256().hexdigest())
        if res.outcome == "identical" and res.events_replayed < len(prep.expected):
            missing = [e for e in prep.expected if e.index not in s.consumed and e.nr not in CLOCKS
                       and not threads.cut_off(s, e)]
            if missing:
                e = missing[0]
                s.diverge(e.index, e.tid, "sequence", describe(e.nr, e.args, e.ret), "process ended")
        if res.outcome == "identical" and log.replayable_until < len(log.events):
            res.outcome = "incomplete-log"
        threads.note_ambiguity(s)
        if s.skipped_clock_reads:
            res.notes.append(f"{s.skipped_clock_reads} recorded clock reads were not made by the replay")
        if s.rdtsc_count:
            res.notes.append(f"rdtsc executed {s.rdtsc_count} times: answered with synthetic values")
        self._verdict()
        return res

    def _prepared(self) -> Prepared:
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
            next_other = _next_other(expected)
            nxt = np.full(len(self.log.events) + 1, 1 << 62, dtype=np.int64)
            nxt[np.fromiter(next_other, dtype=np.int64, count=len(next_other)) + 1] = list(next_other.values())
            prep = Prepared(expected, by_thread, pred_exit, unconsumed, _recorded_outputs(expected), max_gap,
                            _handoff_fds(by_thread), next_other, nxt,
                            {rtid: np.array([e.index for e in q], dtype=np.int64) for rtid, q in by_thread.items()},
                            next((e for e in expected if e.nr == NR_EXIT_GROUP), None))
            self.log.derived["replay"] = prep
        return prep

    def _fast_path(self, by_thread: dict[int, list[Event]]) -> F.FastPath | None:
        """The compiled hot path for strict replays without injections, if it was built."""
        s = self.s
        if not self.fast or not self.strict or self.injections:
            return None
        lib = F.load_library()
        if lib is None:
            s.res.notes.append(f"compiled hot path not built ({F.LIBRARY}: `make -C replay`): "
                               "replaying in Python only")
            return None
        sets = F.Rules(READS, WRITES, CLOCKS, BARRIERS, ALWAYS_ANSWERED,
                        frozenset((KEYED | ON_FD) - READS.keys() - WRITES.keys()), KEYED, TARGETS,
                        frozenset(INPUT_WAITS), EXTERNAL_NRS, BLOCKED_NS, frozenset(FCNTL_DUPFD),
                        FUTEX_KERNEL_WRITES)
        fp = F.FastPath(lib, sets)
        fp.prepare(by_thread, s.prep.pred_exit, self.log.derived, s.prep.handoff_fds)
        return fp

    def _reap(self, pid: int) -> None:
        """Kill the tracee and every task it made (forked children are traced and stopped too)."""
        s = self.s
        for p in {pid, *s.seen}:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        waiting = {pid, *s.seen}
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

    def _loop(self, pid: int) -> None:
        s = self.s
        deadline = time.monotonic() + self.timeout_s
        alive = {pid}
        while alive:
            if time.monotonic() > deadline:
                s.res.notes.append(f"replay timed out after {self.timeout_s} s")
                s.res.outcome = "error"
                return
            # nobody runs (a clone's child counts as running until its first stop is seen)
            if s.started and s.stuck is None and not s.exiting and not threads.clone_in_flight(s) \
                    and not s.order.running(s.threads):
                ev = self._release_next(deadline)
                if ev == "abort":
                    return
            else:
                ev = self._run_fast(deadline)
                if ev == ():
                    ev = self._wait(deadline)
            if ev is None or isinstance(ev, str):
                continue
            s.cur_ev = ev
            s.progress += 1
            if s.vc is not None:
                self._table_sync(ev[1])
            if ev[0] == "n":  # a seccomp notification: a trapped syscall without a ptrace stop
                s.res.stops += 1
                if self._notified(ev[1], ev[2]) == "abort":
                    return
                continue
            wpid, status = ev[1], ev[2]
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                alive.discard(wpid)
                if wpid == pid:
                    s.res.exit_code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
                    return
                if threads.thread_ended(s, wpid) == "abort":
                    return
                continue
            alive.add(wpid)
            s.seen.add(wpid)
            s.res.stops += 1
            if self._stop(wpid, status) == "abort":
                return

    def _release_next(self, deadline: float) -> tuple | str | None:
        """Nobody runs: release the parked thread whose event is the earliest open one. If none
        holds it, the replay cannot go on: say who should have moved (strict), or let the earliest
        parked thread go with a note (what-if replays match calls loosely anyway). Returns "abort",
        None, or a stop the compiled loop handed back after answering the released one."""
        s = self.s
        th = s.order.turn_holder(s.threads)
        if th is None:
            first = s.order.first_open()
            if first >= 1 << 62 and not any(t.alive and t.held for t in s.threads.values()):
                return None  # nothing left to order: the live threads are on their way out
            rtid, expected, actual = stuck_report(first, s.threads, s.by_rtid, lambda e: describe(e.nr, e.args, e.ret))
            if s.strict or (th := s.order.earliest_parked(s.threads)) is None:
                s.diverge(first, rtid, "stuck", expected, actual)
                return "abort"
            if len(s.res.notes) < 40:
                s.res.notes.append(f"out of recorded order: {expected}; {actual}; thread {th.rtid} released")
        held = th.held
        assert held is not None
        if held.regs is None and held.ev is None:  # a new thread, before its first instruction
            th.held = None
            e = th.next_event()
            if e is not None and e.flags & L.KP_RSYS_NO_ENTER and e.nr in CLONES:
                vclock.consume(s, th, e)
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

    def _run_fast(self, deadline: float, cur: int | None = None) -> tuple | None:
        """Let the compiled loop run the threads from ``cur`` (default: the running one), answering
        planned events and handing over between threads in the recorded order (kp_run_threads).

        Returns the event it handed back (see _wait), () when Python should wait itself, None to
        loop again."""
        s = self.s
        fp = s.fp
        if fp is None or s.mem is None or not s.started or fp.out_shift.extra:
            return ()
        if cur is None:
            running = s.order.running(s.threads)
            if len(running) != 1:
                return ()
            cur = running[0]
        if cur not in s.slot_of:
            return ()
        released = s.threads[cur].held
        if released is not None and released.ev is None:
            return ()  # a new thread's start: Python
        for tid, slot in s.slot_of.items():
            th = s.threads[tid]
            p = fp.plans.get(th.rtid)
            if p is None or not th.alive or th.pos >= len(th.queue):
                fp.thr[slot].tid, fp.thr[slot].parked, fp.thr[slot].end, fp.thr[slot].pos = tid, 0, 0, 0
                continue
            end = fp.plan(p, th.pos, 1 << 62, s.emulated, s.sockets, s.fd_version)
            # a thread released now runs up to the next thread's event after its own pending one
            last = th.queue[th.pos].index if tid == cur and th.held is not None else threads.last_ordered(th)
            fp.slot(slot, tid, p, th, end, last, th.held.ev if th.held is not None else None)
        t = fp.thr[s.slot_of[cur]]
        if t.tid != cur or t.pos >= t.end:
            return ()  # nothing planned for it: Python waits for (or answers) its stop
        threads.own_table(s, cur, s.threads[cur])
        fp.run_threads(s.slot_of[cur], len(s.slots), s.pid, s.mem.fd, deadline)
        c = fp.ctx
        self._caught_up_segments(fp)
        s.res.stops += int(c.seen)
        if c.nreq:
            for fd, rec_ns, rep_ns in fp.requests():
                s.res.requests.append(Request(fd, rec_ns / 1e6, rep_ns / 1e6))
        for tid, slot in s.slot_of.items():
            t, th = fp.thr[slot], s.threads[tid]
            if t.tid != tid or not th.alive:
                continue
            th.vt, th.prev_exit, th.arrival = t.vt, t.prev_exit, t.arrival
            if t.parked:
                if t.parks:  # parked by the loop at a stop Python has not seen (the last one, if several)
                    ev = fp.parked_event(t)
                    th.held = Parked(tid, None, ev)
                    if ev[0] == "n":
                        s.notif_pending[tid] = ev[2].id
                    else:
                        s.notif_pending.pop(tid, None)
            elif th.held is not None and th.held.ev is not None:
                th.held = None  # released in C
                s.notif_pending.pop(tid, None)
        if c.err:
            raise OSError(int(c.err), "replay hot path: ptrace/memory access failed")
        if c.has_stop:
            ev = fp.event()
            if released is not None and ev[1] == cur and not fp.segments():
                s.res.stops -= 1  # the released thread's stop, handed back untouched: counted when it came
            return ev
        if released is not None and s.threads[cur].held is released and not c.nseg:
            return ()  # nothing planned for the released thread: Python answers its stop
        return None

    def _caught_up_segments(self, fp: F.FastPath) -> None:
        """Bookkeeping for all the runs the compiled loop answered, for every thread at once.

        Why batched: with threads the loop hands over every few events (the 4-worker pool: ~4000
        runs of ~4 events per 2000 requests), and catching up each run on its own (a slice, a set
        update, a hash update per run) cost ~10 us of Python each, a fifth of such a replay's wall
        time. A thread's runs are consecutive in its plan, so per thread it is one range; outputs
        only need their order per channel, which the runs' order gives."""
        s = self.s
        spans: dict[int, list] = {}   # slot -> [thread, plan, first pos, events, in the tracee]
        outs: dict[int, list[bytes]] = {}
        for slot, done, vdone in fp.segments():
            sp = spans.get(slot)
            if sp is None:
                th = s.threads[s.slots[slot]]
                sp = spans[slot] = [th, fp.plans[th.rtid], th.pos, 0, 0]
            _writes_answered(sp[1], sp[2] + sp[3], done, outs)
            sp[3] += done
            sp[4] += vdone
        for th, p, pos, done, vdone in spans.values():
            self._account(th, p, pos, done, vdone)
        for fd, chunks in outs.items():
            s.output(fd, chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def _caught_up(self, th: _Thread, p: F.ThreadPlan, pos: int, done: int, vdone: int) -> None:
        """Bookkeeping for events the compiled loop answered: consumed, outputs (in order)."""
        outs: dict[int, list[bytes]] = {}
        _writes_answered(p, pos, done, outs)
        self._account(th, p, pos, done, vdone)
        for fd, chunks in outs.items():
            self.s.output(fd, b"".join(chunks))

    def _account(self, th: _Thread, p: F.ThreadPlan, pos: int, done: int, vdone: int) -> None:
        s = self.s
        s.consumed.update(p.index_list[pos : pos + done])
        th.pos += done
        s.res.events_replayed += done
        s.res.tracee_answers += vdone  # answered in the tracee: no stop

    def _wait(self, deadline: float) -> tuple | None:
        """Block for the next ptrace stop ("p", tid, status) or notification ("n", tid, regs)."""
        s = self.s
        if s.fp is None or s.fp.ctx.notif_fd < 0:
            return ("p", *os.waitpid(-1, T.WALL))
        return s.fp.wait(max(0, int((deadline - time.monotonic()) * 1000)) + 1)

    def _poll(self) -> tuple | None:
        s = self.s
        if s.fp is None or s.fp.ctx.notif_fd < 0:
            wpid, status = os.waitpid(-1, T.WALL | os.WNOHANG)
            return ("p", wpid, status) if wpid else None
        return s.fp.wait(0)

    def _notified(self, tid: int, regs: F.NotifRegs) -> str | None:
        """A notified syscall: answered like a seccomp stop, through the listener instead of ptrace."""
        s = self.s
        if not s.started:
            s.fp.respond(regs.id, 0, run_it=True)  # type: ignore[union-attr]
            return None
        th = s.threads.get(tid)
        if th is None:
            return s.unsupported(f"syscall from unknown thread {tid}")
        s.notif_pending[tid] = regs.id
        return self._syscall(tid, th, regs)

    def _stop(self, tid: int, status: int) -> str | None:
        s = self.s
        sig = os.WSTOPSIG(status)
        event = status >> 16
        if event == T.EVENT_EXEC:
            if s.vc is not None and s.fp is not None:  # the new image has neither table nor stubs
                s.fp.ctx.vtab = None
                s.vc.close()
                s.vc, s.vc_state = None, "want"
            s.mem = T.Memory(s.pid)
            patched = T.patch_vdso(s.pid, s.mem)
            s.res.notes.append(f"vDSO patched to trap: {', '.join(patched) or 'none found'}")
            s.started = True
            s.threads[tid] = _Thread(s.log.tgid, s.by_rtid.get(s.log.tgid, []), vt=s.log.exec_ns,
                                        prev_exit=s.log.exec_ns)
            threads.add_slot(s, tid)
            T.cont(tid)
            return None
        if event in (T.EVENT_FORK, T.EVENT_VFORK):
            s.seen.add(T.event_msg(tid))
            return s.unsupported("the process forks a child: replay follows one process")
        if event == T.EVENT_CLONE:
            child, rtid = T.event_msg(tid), s.clone_of.pop(tid, None)
            if rtid is None:
                s.res.notes.append(f"thread {child} has no recorded counterpart")
                rtid = -child
            if child in s.unmapped:
                s.unmapped.discard(child)
                threads.new_thread(s, child, rtid)
            else:
                s.child_rtid[child] = rtid
            T.cont(tid)
            return None
        if event == T.EVENT_SECCOMP:
            if not s.started:
                T.cont(tid)
                return None
            th = s.threads.get(tid)
            if th is None:
                return s.unsupported(f"syscall from unknown thread {tid}")
            regs = T.get_regs(tid)
            if s.vc_state == "want" and tid == s.pid and regs.fs_base:
                return self._table_inject(tid, th, regs)
            return self._syscall(tid, th, regs)
        if sig == (signal.SIGTRAP | 0x80):  # syscall-exit stop we asked for
            th = s.threads.get(tid)
            cb = th.pending_exit if th else None
            if th is not None:
                th.pending_exit = None
            if cb is not None:
                r = cb(tid, T.get_regs(tid))
                if r == "abort":
                    return r
            T.cont(tid)
            return None
        if sig == signal.SIGSTOP and tid not in s.threads and s.started:
            if tid in s.child_rtid:
                threads.new_thread(s, tid, s.child_rtid.pop(tid))  # parked before its first instruction
            else:
                s.unmapped.add(tid)  # mapped (and parked) at its parent's clone stop
            return None
        if sig == signal.SIGSEGV:
            regs = T.get_regs(tid)
            mem = s.mem or T.Memory(tid)  # before exec: the tracer's own forked child reading a clock
            code = mem.read(regs.rip, 3)
            if mem is not s.mem:
                mem.close()
            if code[:2] == b"\x0f\x31" or code == b"\x0f\x01\xf9":
                return vclock.rdtsc(s, tid, regs, 2 if code[:2] == b"\x0f\x31" else 3)
        if sig == signal.SIGTRAP:
            T.cont(tid)
            return None
        T.cont(tid, sig)
        return None

    def _table_inject(self, tid: int, th: _Thread, regs) -> None:
        """Make the stopped thread map the answer table's pages instead of this syscall, then
        restart the syscall unchanged (its next seccomp stop is handled as usual)."""
        s = self.s
        saved = type(regs).from_buffer_copy(regs)
        fs_base = regs.fs_base
        libc = V.libc_mapping(s.pid)
        V.mmap_call(regs, max(0, libc[0] - V.SIZE - (1 << 24)) & ~0xFFF if libc else 0)
        T.set_regs(tid, regs)
        s.vc_state = "injecting"

        def mapped(t: int, r) -> None:
            V.restart(saved)
            T.set_regs(t, saved)
            addr = r.rax
            if addr >= 1 << 63 or s.fp is None or s.mem is None:
                s.vc_state = "off"
                s.res.notes.append(f"answer table not mapped into the tracee (mmap: {addr - (1 << 64)}): "
                                   "every call traps")
                return None
            try:
                s.vc = V.AnswerTable.install(s.fp.lib, s.pid, tid, fs_base, addr, s.mem, saved.rip)
            except OSError as e:  # e.g. /proc/<pid>/map_files needs CAP_SYS_ADMIN
                s.vc_state = "off"
                s.res.notes.append(f"no answers inside the tracee ({e}): every call traps")
                return None
            s.fp.ctx.vtab, s.fp.ctx.vtid = s.vc.table_address, tid
            th.fs_base = fs_base
            s.vc_state = "on"
            s.res.answer_table = True
            s.res.notes.append("answered in the tracee: vDSO clock reads" + (
                f", libc {', '.join(s.vc.wrappers)}" if s.vc.wrappers else ""))
            return None

        th.pending_exit = mapped
        T.to_exit(tid)

    def _table_sync(self, tid: int) -> None:
        """A stop of the table's owner that the compiled loop did not see: account the events the
        tracee answered itself since its last stop, in order, as if each had trapped."""
        s = self.s
        vc, fp = s.vc, s.fp
        if vc is None or fp is None or tid != vc.tid or not vc.gap_open:
            return
        th = s.threads[tid]
        p = fp.plans[th.rtid]
        pos = th.pos
        done = fp.sync(p, th, pos)
        if done:
            self._caught_up(th, p, pos, done, done)
            if fp.ctx.nreq:
                for fd, rec_ns, rep_ns in fp.requests():
                    s.res.requests.append(Request(fd, rec_ns / 1e6, rep_ns / 1e6))

    def _syscall(self, tid: int, th: _Thread, regs, forced: bool = False) -> str | None:
        s = self.s
        nr = regs.orig_rax
        args = (regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9)
        nxt = vclock.next_event(s, th, nr)
        if nxt is not None and not forced and nr not in CLOCKS and not s.order.is_turn(nxt):
            # released by _release_next when its event is the earliest open one
            th.held = Parked(tid, regs, s.cur_ev if s.cur_ev[1] == tid else None)
            return None
        if nr in CLOCKS:
            return vclock.answer_clock(s, tid, th, regs, nr, args, nxt)
        if nxt is None or nxt.nr != nr or (nr in KEYED and (nxt.args[0] & 0xFFFFFFFF) != (args[0] & 0xFFFFFFFF)):
            exp = describe(nxt.nr, nxt.args, nxt.ret) if nxt else "end of the recorded stream"
            s.diverge(nxt.index if nxt else -1, th.rtid, "sequence", exp, describe(nr, args))
            if s.strict:
                return "abort"
            return rules.lenient(s, tid, th, regs, nr, args)
        vclock.consume(s, th, nxt)
        return rules.apply(s, tid, th, regs, nr, args, nxt)

    def _verdict(self) -> None:
        s = self.s
        r = s.res
        if s.prep.expected:
            r.recorded_span_ms = (s.prep.expected[-1].exit_ns - s.log.exec_ns) / 1e6
            r.replay_span_ms = (max((t.vt for t in s.threads.values()), default=s.log.exec_ns)
                                - s.log.exec_ns) / 1e6
        if self.deadline_ms is not None:
            for q in r.requests:
                q.timed_out = q.replay_ms > self.deadline_ms
            slow = [q for q in r.requests if q.timed_out]
            r.verdict = (f"timeout: {len(slow)} of {len(r.requests)} requests over {self.deadline_ms:g} ms "
                         f"(worst {max(q.replay_ms for q in slow):.1f} ms)" if slow else
                         f"pass: {len(r.requests)} requests within {self.deadline_ms:g} ms")


def path_matches(pattern: str, path: str) -> bool:
    return fnmatch.fnmatch(path, pattern)


def _writes_answered(p: F.ThreadPlan, pos: int, done: int, outs: dict[int, list[bytes]]) -> None:
    """Append the outputs among p's events [pos, pos + done) to ``outs`` (fd -> chunks, in order)."""
    # (bisect on a list: a numpy call costs more than the whole run between two hand-overs)
    lo = bisect.bisect_left(p.writes_list, pos)
    hi = bisect.bisect_left(p.writes_list, pos + done, lo)
    if hi - lo > 32:
        sel = np.arange(lo, hi)
        sel = sel[p.ops[p.writes[sel], F.KIND] == F.K_WRITE]  # writes answered as outputs (emulated fd)
        fds = p.ops[p.writes[sel], F.FD]
        for fd in np.unique(fds).tolist():
            outs.setdefault(fd, []).extend(p.write_data[i] for i in sel[fds == fd].tolist())
    else:  # a short run (between hand-overs): plain Python is cheaper than numpy here
        ops, rows = p.ops, p.writes_list
        for i in range(lo, hi):
            if ops.item(rows[i], F.KIND) == F.K_WRITE:
                outs.setdefault(ops.item(rows[i], F.FD), []).append(p.write_data[i])
