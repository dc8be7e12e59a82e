"""Virtual time of a replay: each thread's clock, advanced by the recorded think times and
durations (plus injected delays), and the clock reads answered from it.

Why per thread: a thread's clock moves only with its own events. A matched event adds its recorded
gap to the thread's previous event (think time) and its recorded duration; a call that waited for
the outside (a socket read, accept, poll) completes no earlier than the peer's input arrives,
and the peer's send moves with our last output on that fd (a closed loop: if we answer 5 ms later,
its next request comes 5 ms later). Without injections, virtual time equals the recorded time.

Clock reads (clock_gettime/gettimeofday/time, trapped through the patched vDSO) return the recorded
value shifted by the virtual-time difference; a read the log does not have is synthesized from the
replay clock, strictly increasing. rdtsc (faulting, PR_TSC_SIGSEGV) gets a synthetic counter.
"""

from __future__ import annotations

import struct

from kprobe.replay import tracee as T
from kprobe.replay.log import Event
from kprobe.replay.order import Thread
from kprobe.replay.session import Session
from kprobe.replay.syscall_sets import (
    CLOCKS,
    EXTERNAL_NRS,
    INPUT_WAITS,
    NR_CLOCK_GETTIME,
    NR_GETTIMEOFDAY,
    NR_TIME,
    WRITES,
    describe,
    sysname,
)

BLOCKED_NS = 50_000  # an input call this long waited for its peer
CLOCK_REALTIME, CLOCK_REALTIME_COARSE, CLOCK_TAI = 0, 5, 11
WALL_CLOCKS = frozenset({CLOCK_REALTIME, CLOCK_REALTIME_COARSE, CLOCK_TAI})  # shifted by the log's clock offset


def next_event(s: Session, th: Thread, nr: int) -> Event | None:
    """The thread's next expected event; recorded clock reads the replay does not make are skipped."""
    while th.pos < len(th.queue):
        e = th.queue[th.pos]
        if e.nr in CLOCKS and nr not in CLOCKS:
            th.pos += 1  # the replay did not make this read: keep virtual time on the timeline
            s.skipped_clock_reads += 1
            th.vt += max(0, e.enter_ns - s.prep.pred_exit.get(e.index, th.prev_exit)) + e.dur_ns
            th.prev_exit = e.exit_ns
            continue
        return e
    return None


def consume(s: Session, th: Thread, e: Event) -> None:
    th.pos += 1
    s.consumed.add(e.index)
    s.res.events_replayed += 1
    delay = sum(i.delay_ns(e, s) for i in s.injections)
    dur = e.dur_ns
    if any(i.removes(e) for i in s.injections):
        dur = 0
    think = max(0, e.enter_ns - s.prep.pred_exit.get(e.index, th.prev_exit))
    fd = e.args[0] & 0xFFFFFFFF
    if e.nr in INPUT_WAITS and is_external(s, e) and e.dur_ns > BLOCKED_NS:
        # The call waited for the peer, so the peer sent after our last output on this fd:
        # closed loop, its send moves with that output. Virtual time cannot run backwards.
        th.arrival = e.exit_ns + s.out_shift.get(fd, 0)
        th.vt = max(th.vt + think, th.arrival) + delay
    else:
        th.arrival = e.exit_ns + (th.vt - th.prev_exit)
        th.vt = th.vt + think + dur + delay
    if e.nr in WRITES:
        s.out_shift[fd] = th.vt - e.exit_ns
    th.prev_exit = e.exit_ns


def is_external(s: Session, e: Event) -> bool:
    return (e.args[0] & 0xFFFFFFFF) in s.sockets or e.nr in EXTERNAL_NRS


def answer_clock(s: Session, tid: int, th: Thread, regs, nr: int, args, nxt: Event | None) -> str | None:
    assert s.mem is not None
    if nxt is not None and nxt.nr == nr and (nr != NR_CLOCK_GETTIME or nxt.args[0] == args[0]):
        consume(s, th, nxt)
        shift = th.vt - nxt.exit_ns
        if nr == NR_TIME:
            val = nxt.ret + shift // 1_000_000_000
            if args[0]:
                s.mem.write(args[0], struct.pack("<q", val))
            s.skip(tid, regs, val)
            return None
        rec = nxt.regions.get(0, b"\0" * 16)
        sec, sub = struct.unpack("<qq", rec[:16])
        unit = 1_000_000_000 if nr == NR_CLOCK_GETTIME else 1_000_000
        total = sec * unit + sub + (shift if nr == NR_CLOCK_GETTIME else shift // 1000)
        if args[1 if nr == NR_CLOCK_GETTIME else 0]:
            s.mem.write(args[1 if nr == NR_CLOCK_GETTIME else 0], struct.pack("<qq", total // unit, total % unit))
        s.skip(tid, regs, nxt.ret)
        return None
    # not in the log (e.g. gettimeofday through a glibc IFUNC): synthesize from the replay clock
    s.res.synthesized_clock_reads += 1
    if len(s.res.notes) < 20:
        s.res.notes.append(f"clock read {sysname(nr)}({args[0]}) not in the log (next expected: "
                           f"{describe(nxt.nr, nxt.args) if nxt else 'none'}): synthesized")
    th.synth += 1  # strictly increasing, without moving the virtual clock off the recorded timeline
    clk = args[0] if nr == NR_CLOCK_GETTIME else 0
    now = th.vt + th.synth + (s.log.clock_offset_ns if nr != NR_CLOCK_GETTIME or clk in WALL_CLOCKS else 0)
    if nr == NR_CLOCK_GETTIME:
        s.mem.write(args[1], struct.pack("<qq", now // 1_000_000_000, now % 1_000_000_000))
        s.skip(tid, regs, 0)
    elif nr == NR_GETTIMEOFDAY:
        if args[0]:
            s.mem.write(args[0], struct.pack("<qq", now // 1_000_000_000, now % 1_000_000_000 // 1000))
        s.skip(tid, regs, 0)
    else:
        if args[0]:
            s.mem.write(args[0], struct.pack("<q", now // 1_000_000_000))
        s.skip(tid, regs, now // 1_000_000_000)
    return None


def rdtsc(s: Session, tid: int, regs, length: int) -> None:
    """rdtsc faults (PR_TSC_SIGSEGV): answer a synthetic counter from virtual time, count it.

    The recording cannot see rdtsc, so its values are not reproduced; programs that only use it
    for statistics (ld.so does) replay fine, ones that branch on it may diverge (noted)."""
    s.rdtsc_count += 1
    th = s.threads.get(tid)
    tsc = (th.vt if th else 0) + s.rdtsc_count
    regs.rax, regs.rdx = tsc & 0xFFFFFFFF, (tsc >> 32) & 0xFFFFFFFF
    if length == 3:
        regs.rcx = 0
    regs.rip += length
    T.set_regs(tid, regs)
    T.cont(tid)
    return None
