"""The engine's side of thread ordering: threads appearing (clone) and ending, the compiled loop's
slots, and what is reported when the replay cannot go on.

replay/order.py decides who may move (the recorded order of hand-overs); this module keeps the
replay's threads in step with the tracee's: a clone's child is parked until its recorded start, a
thread that ends must have done everything it recorded, and a stuck replay names the thread that
did not move, where it is in the kernel or in user code, and what the order waits for.
"""

from __future__ import annotations

import numpy as np

from kprobe.replay import fastpath as F
from kprobe.replay import intracee as V
from kprobe.replay import tracee as T
from kprobe.replay.log import Event
from kprobe.replay.order import Parked, Thread
from kprobe.replay.session import Divergence, Session
from kprobe.replay.syscall_sets import CLOCKS, describe, sysname

STUCK_S = 2.0  # a replay that makes no progress this long (plus what the running thread needs) ends


def own_table(s: Session, tid: int, th: Thread) -> None:
    """Only the running thread runs, so it may own the in-tracee answer table (the stubs compare
    the fs base); switched only while no answers are outstanding."""
    vc = s.vc
    if vc is not None and vc.tid != tid and not vc.gap_open and th.fs_base and s.fp is not None:
        vc.tab[V.OWNER], vc.tid, s.fp.ctx.vtid = th.fs_base, tid, tid


def last_ordered(th: Thread) -> int:
    """Index of the thread's last replayed ordered (non-clock) event; -1 before its first."""
    i = th.pos - 1
    while i >= 0 and th.queue[i].nr in CLOCKS:
        i -= 1
    return th.queue[i].index if i >= 0 else -1


def thread_ended(s: Session, tid: int) -> str | None:
    """A thread other than the main one ended: every ordered event it recorded must be done."""
    th = s.threads.get(tid)
    if th is None:
        return None
    th.alive, th.held = False, None
    if s.stuck is not None:
        return None  # killed because the replay was stuck: that is the report
    s.consumed.update(e.index for e in th.queue[th.pos:] if cut_off(s, e))  # killed in them, as recorded
    s.notif_pending.pop(tid, None)
    left = [e for e in th.queue[th.pos:] if e.nr not in CLOCKS and e.index not in s.consumed and not cut_off(s, e)]
    if left:
        e = left[0]
        s.diverge(e.index, th.rtid, "sequence", describe(e.nr, e.args, e.ret), f"thread {th.rtid} ended")
        if s.strict:
            return "abort"
    return None


def cut_off(s: Session, e: Event) -> bool:
    """A call the thread never came back from: it ended with a kernel-internal restart code
    (ERESTARTSYS ... ERESTART_RESTARTBLOCK: killed in it), or it completed after a sibling's
    exit_group (killed on its way back). A replayed thread killed the same way need not reach it."""
    x = s.exit_group
    return -516 <= e.ret <= -512 or (x is not None and e.index > x.index and e.tid != x.tid)


def allowance(s: Session) -> float:
    """Seconds the running thread may need beyond STUCK_S: four times its longest recorded run
    between two events (a thread that computes for seconds is not stuck)."""
    running = s.order.running(s.threads) if s.started else []
    return 4 * s.prep.max_gap_s.get(s.threads[running[0]].rtid, 0.0) if running else 0.0


def stuck_running(s: Session, waited_s: float) -> None:
    """Called by the watchdog: name the thread that did not move, where it is, what the order waits for."""
    running = s.order.running(s.threads) if s.started else []
    if not running:
        what = "before the program's exec" if not s.started else "with no thread running or released"
        s.stuck = Divergence(-1, 0, "stuck", "progress", f"no stop for {waited_s:.1f} s {what}")
        return
    tid = running[0]
    th = s.threads[tid]
    last = th.queue[th.pos - 1] if th.pos else None
    nxt = th.next_event()
    doing = _task_state(s.pid, tid)
    gap = f", recorded {(nxt.enter_ns - last.exit_ns) / 1000:.0f} us after it" if nxt and last else ""
    after = f" after event {last.index} {describe(last.nr, last.args, last.ret)}" if last else " from its start"
    expected = (f"thread {th.rtid} reaches {describe(nxt.nr, nxt.args, nxt.ret)} (event {nxt.index}){gap}"
                if nxt else f"thread {th.rtid} ends")
    parked = ", ".join(f"thread {t.rtid} at event {n.index if (n := t.next_event()) else '-'}"
                       for t in s.threads.values() if t.alive and t.held is not None) or "none"
    s.stuck = Divergence(nxt.index if nxt else -1, th.rtid, "stuck", expected,
                         f"thread {th.rtid} (tid {tid}){after} {doing} for {waited_s:.1f} s; parked: {parked}")
    s.res.notes.append("a thread that waits for a sibling without a syscall between (a data race, a "
                       "lock-free hand-off) cannot be ordered from syscalls (replay/README.md, Threads)")


def add_slot(s: Session, tid: int) -> None:
    """Give a thread a slot in the compiled loop (which then hands over to it by itself)."""
    if s.fp is None or len(s.slots) >= F.MAX_THREADS or tid in s.slot_of:
        return
    if not s.slots:  # first thread: the order arrays, once per replay (next_other's once per log)
        s.owner = np.full(max(len(s.log.events), 1), -1, dtype=np.int64)
        s.fp.set_order(s.prep.next_other_arr, s.owner)
    slot = len(s.slots)
    s.slots.append(tid)
    s.slot_of[tid] = slot
    idx = s.prep.indices.get(s.threads[tid].rtid)  # its queue's indices (a lenient replay reorders, same set)
    if idx is not None and idx.size:
        s.owner[idx] = slot


def clone_in_flight(s: Session) -> bool:
    return bool(s.clone_of or s.child_rtid or s.unmapped)


def new_thread(s: Session, tid: int, rtid: int) -> None:
    """A clone's child, ``rtid`` in the recording: parked until its recorded start is next. Its
    clock starts where its parent's was at the clone."""
    parent_vt = max((t.vt for t in s.threads.values()), default=0)
    clone_exit, vt = s.spawned.get(rtid, (parent_vt, parent_vt))
    s.threads[tid] = Thread(rtid, s.by_rtid.get(rtid, []), vt=vt, prev_exit=clone_exit,
                                held=Parked(tid, None), fs_base=T.get_regs(tid).fs_base)
    add_slot(s, tid)


def note_ambiguity(s: Session) -> None:
    """Say where the recording's thread order was not decided by syscalls (log.Ambiguity), and
    whether the first divergence came after such a point (then it is the likely cause)."""
    amb = s.log.ambiguous
    s.res.ambiguous_order = len(amb)
    if not amb:
        return
    a = amb[0]
    where = f"in {sysname(a.syscall)}" if a.syscall >= 0 else f"in user mode at ip {a.ip:#x}"
    s.res.notes.append(
        f"thread order ambiguous at {len(amb)} point(s) of the recording: first, thread {a.tid} was switched "
        f"out between two hand-overs ({where}, after event {a.after}) and a sibling ran for "
        f"{(a.in_ns - a.out_ns) / 1000:.0f} us before it resumed; replay runs that thread's code there as one block")
    if s.res.divergences:
        d = s.res.divergences[0]
        before = [x for x in amb if x.after <= d.index]
        if before:
            s.res.notes.append(f"the first divergence (event {d.index}) comes after the ambiguous point at "
                               f"event {before[-1].after} (thread {before[-1].tid}): likely its cause, an "
                               "interleaving between syscalls that the log cannot order")


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
