"""Thread ordering for replay: one tracee thread runs at a time, in the recorded order.

Why: threads share memory. The user code between two syscalls of a thread (taking an uncontended
mutex, bumping a shared counter) never enters the kernel, so no tracer can see or order it; what a
tracer can do is run it as a block while every other thread stands still. The recording ran those
blocks one at a time too (replay/serialize.py: one CPU, no wake-up preemption), so the order in
which threads came back from their syscalls (the log's order, see replay/log.py) is the order in
which the blocks ran. Replay reproduces it:

* a thread that stops at a trapped syscall goes on only if its recorded event is the earliest one
  not replayed yet (clock reads excepted: they are part of a block, not a hand-over); otherwise it
  is *parked* at that stop;
* when no thread runs, the parked thread holding the earliest open event is released: its syscall
  is answered and it runs its next block, up to its next stop;
* a new thread is parked before its first instruction and released when its start (recorded as
  the first return from clone in the child) is next.

Nothing is ever released early. A replay that cannot go on (the thread that must move is gone or
blocked, or a running thread never reaches its next syscall) is reported with the thread, the
event and what it waits for (:func:`stuck_report`, and replay/watchdog.py for a thread that runs or
blocks for too long) instead of hanging.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kprobe.replay.fastpath import LastInput
from kprobe.replay.log import Event


@dataclass
class Parked:
    """Where a parked thread waits: at a trapped syscall (its registers, or a seccomp notification
    seen through the same names), or before its first instruction (regs None)."""

    tid: int
    regs: object | None
    ev: tuple | None = None   # the stop as waited for ("p", tid, status) / ("n", tid, regs): the compiled loop can take it


@dataclass
class Thread:
    """One replayed thread: its recorded events and how far it got, its virtual clock, its stop."""

    rtid: int                       # recorded tid
    queue: list[Event]
    pos: int = 0
    vt: int = 0                     # virtual time, ns (recorded monotonic domain)
    prev_exit: int = 0              # recorded exit of the previous matched event
    pending_exit: object = None     # callback at the syscall-exit stop
    held: Parked | None = None      # parked for ordering (None: running, or exited)
    arrival: int = 0                # virtual time the last input arrived
    synth: int = 0                  # synthesized clock reads since the last recorded one
    alive: bool = True
    inputs: LastInput = field(default_factory=LastInput)  # its unanswered requests, per fd
    fs_base: int = 0                # its TLS base: the in-tracee stubs answer only the table's owner

    def next_event(self) -> Event | None:
        return self.queue[self.pos] if self.pos < len(self.queue) else None


@dataclass
class ThreadOrder:
    """The recorded order of hand-overs: which events are open and who may move."""

    unconsumed: list[int]                   # sorted indices of the ordered (non-clock) events
    consumed: set[int] = field(default_factory=set)
    pos: int = 0                            # unconsumed[:pos] are all consumed

    def first_open(self) -> int:
        """Index of the earliest ordered event not replayed yet (1 << 62 when none is left)."""
        unc, i = self.unconsumed, self.pos
        while i < len(unc) and unc[i] in self.consumed:
            i += 1
        self.pos = i
        return unc[i] if i < len(unc) else 1 << 62

    def is_turn(self, e: Event) -> bool:
        return self.first_open() >= e.index

    @staticmethod
    def running(threads: dict[int, Thread]) -> list[int]:
        """Replay tids of live threads that are not parked (at most one once the program runs)."""
        return [tid for tid, t in threads.items() if t.alive and t.held is None]

    def turn_holder(self, threads: dict[int, Thread]) -> Thread | None:
        """The parked thread whose pending event is the earliest open one."""
        first = self.first_open()
        for t in threads.values():
            if t.alive and t.held is not None:
                e = t.next_event()
                if e is None or e.index <= first:
                    return t
        return None

    @staticmethod
    def earliest_parked(threads: dict[int, Thread]) -> Thread | None:
        parked = [t for t in threads.values() if t.alive and t.held is not None]
        return min(parked, key=lambda t: e.index if (e := t.next_event()) else 1 << 62, default=None)


def owner_of(index: int, threads: dict[int, Thread], by_rtid: dict[int, list[Event]]) -> tuple[int, Event | None]:
    """(recorded tid, event) of the ordered event at ``index``."""
    for rtid, q in by_rtid.items():
        for e in q:
            if e.index == index:
                return rtid, e
    return 0, None


def stuck_report(first: int, threads: dict[int, Thread], by_rtid: dict[int, list[Event]],
                 describe) -> tuple[int, str, str]:  # noqa: ANN001 - describe(Event) -> str
    """(recorded tid, expected, actual) when no thread can move: the earliest open event's thread
    is gone, was never created, or is parked somewhere else."""
    rtid, e = owner_of(first, threads, by_rtid)
    what = describe(e) if e is not None else f"event {first}"
    mine = [t for t in threads.values() if t.rtid == rtid]
    if not mine:
        why = f"thread {rtid} does not exist in the replay (its clone did not happen or returned another tid)"
    elif not mine[0].alive:
        why = f"thread {rtid} ended before it"
    else:
        t = mine[0]
        n = t.next_event()
        why = f"thread {rtid} is parked at event {n.index if n else '-'} instead"
    parked = ", ".join(f"thread {t.rtid} at event {n.index if (n := t.next_event()) else '-'}"
                       for t in threads.values() if t.alive and t.held is not None) or "none"
    return rtid, f"thread {rtid} next: {what} (event {first})", f"{why}; parked: {parked}"
