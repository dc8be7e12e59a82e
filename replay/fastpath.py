"""The replay hot path: plans of recorded syscalls executed by a small C loop (replay/fastpath.c).

Why: a ptrace stop is expensive even from C (tracer and tracee on one CPU), and the Python
engine added several times that per stop (replay/README.md has the measurements). Most stops of a service's steady state are fully decided by
the log: read a recorded request, answer a clock read, compare a reply, skip an fsync. For a run
of such events of one thread, Python builds a plan once (:meth:`ThreadPlan.build`, kinds decided by
:meth:`FastPath.plan`) and the C loop answers stop after stop; at the first stop that does not fit
(signal, exit, other syscall or fd, different output bytes, end of plan) it returns that stop
untouched and the engine handles it as before. Threads: the loop knows every thread's plan and the
recorded order (``set_order``, ``slot``); a thread whose next event is not its turn is parked
there and the thread owning the next event, if it is parked at it, released, all without Python
(replay/order.py states the rule). Afterwards the engine brings its bookkeeping up to date from
the loop's segments and slots (consumed events, output hashes, request latencies, each thread's
virtual time, who is parked where).

While the tracee runs, the planned events after the stop just answered can be answered inside the
tracee itself (intracee.py: the C loop writes them into a table the tracee's stubs read) and are
accounted at the next stop. Only used for strict replays without injections (what-if replays take the Python path) and only
when ``make -C replay`` built the library; otherwise the engine runs in Python as before.
"""

from __future__ import annotations

import bisect
import ctypes
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from kprobe.replay.syscall_sets import FUTEX_CMD_MASK, NR_FCNTL, NR_FUTEX, NR_RECVFROM
from kprobe.schemas.syscall_table import NR_MAX, Buf, numbers

LIBRARY = Path(__file__).resolve().parent / "build" / "libkpreplay.so"
FDMAX = 4096      # per-fd tables shared with C; events on higher fds take the Python path
K_SLOW, K_PASS, K_SKIP, K_WRITE, K_CLOCK = 0, 1, 2, 3, 4
F_FDCHECK, F_WRITE, F_EXT_WAIT, F_MARK_INPUT, F_SOCKET = 1, 2, 4, 8, 16
NONE = np.iinfo(np.int64).min
# columns of struct kp_op
RET, ENTER, EXIT, PRED, ARG0, ROFF, RLEN, RARG, NR, FD, KIND, FLAGS = 0, 1, 2, 3, 4, 5, 8, 11, 14, 15, 16, 17
NCOLS = 18
MAX_PLAN = 16384
MAX_THREADS = 64  # threads the compiled loop hands over between (more: the rest go through Python)
SEG_CAP = 4096
MIN_PLAN = 4      # shorter runs are not worth a plan
REQ_CAP = 4096


EV_PTRACE, EV_NOTIF = 1, 2
# syscalls delivered as seccomp user notifications when the hot path is on: their Python handlers
# only ever answer them (skip with a value) or let them run (passthrough), never touch registers.
# futex and sched_yield: where threads hand over (answered from the log, PI operations run)
NOTIFIED = numbers(lambda s: s.notify)


class _Ev(ctypes.Structure):
    _fields_ = [("kind", ctypes.c_int64), ("tid", ctypes.c_int64), ("status", ctypes.c_int64),
                ("id", ctypes.c_uint64), ("nr", ctypes.c_int64), ("args", ctypes.c_int64 * 6)]


class _Ctx(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int64) for n in ("tid", "memfd", "notif_fd", "sigfd", "pid", "check")] + [
        ("ev", _Ev)] + [
        (n, ctypes.c_int64) for n in (
        "vt", "prev_exit", "arrival", "deadline_ns", "has_stop", "err", "nreq", "req_cap")] + [
        ("req", ctypes.c_void_p), ("out_shift", ctypes.c_void_p), ("li_has", ctypes.c_void_p),
        ("li_vt", ctypes.c_void_p), ("li_rec", ctypes.c_void_p), ("blob", ctypes.c_void_p),
        ("scratch", ctypes.c_void_p), ("scratch_len", ctypes.c_int64),
        ("vtab", ctypes.c_void_p), ("vtid", ctypes.c_int64), ("vdone", ctypes.c_int64),
        ("nx_ops", ctypes.c_void_p), ("nx_pos", ctypes.c_int64), ("nx_end", ctypes.c_int64),
        ("steps", ctypes.c_int64), ("pending", ctypes.c_void_p), ("preset", ctypes.c_int64),
        ("thr", ctypes.c_void_p), ("nthr", ctypes.c_int64), ("cur", ctypes.c_int64), ("next_other", ctypes.c_void_p),
        ("owner", ctypes.c_void_p), ("seg", ctypes.c_void_p), ("nseg", ctypes.c_int64), ("seg_cap", ctypes.c_int64),
        ("seen", ctypes.c_int64), ("parked_now", ctypes.c_int64)]


class _Thr(ctypes.Structure):
    """struct kp_thr: one replayed thread as kp_run_threads sees it."""

    _fields_ = [("tid", ctypes.c_int64), ("ops", ctypes.c_void_p), ("idx", ctypes.c_void_p), ("pos", ctypes.c_int64),
                ("end", ctypes.c_int64), ("vt", ctypes.c_int64), ("prev_exit", ctypes.c_int64),
                ("arrival", ctypes.c_int64), ("li_has", ctypes.c_void_p), ("li_vt", ctypes.c_void_p),
                ("li_rec", ctypes.c_void_p), ("fs_base", ctypes.c_int64), ("last_ordered", ctypes.c_int64),
                ("parked", ctypes.c_int64), ("parks", ctypes.c_int64), ("ev", _Ev)]


def load_library() -> ctypes.CDLL | None:
    """The compiled hot path, or None when it was not built (the engine then runs in Python)."""
    if not LIBRARY.exists():
        return None
    lib = ctypes.CDLL(str(LIBRARY))
    lib.kp_run_threads.restype = ctypes.c_int64
    lib.kp_run_threads.argtypes = [ctypes.POINTER(_Ctx)]
    lib.kp_wait.restype = ctypes.c_int64
    lib.kp_wait.argtypes = [ctypes.POINTER(_Ctx), ctypes.c_int64]
    lib.kp_respond.restype = ctypes.c_int64
    lib.kp_respond.argtypes = [ctypes.c_int64, ctypes.c_uint64, ctypes.c_int64, ctypes.c_int64]
    lib.kp_vsync.restype = ctypes.c_int64
    lib.kp_vsync.argtypes = [ctypes.POINTER(_Ctx), ctypes.c_void_p, ctypes.c_int64]
    return lib


@dataclass
class NotifRegs:
    """A notified syscall seen through the names the engine reads from ptrace registers."""

    orig_rax: int
    rdi: int
    rsi: int
    rdx: int
    r10: int
    r8: int
    r9: int
    id: int


class OutShift:
    """fd -> virtual minus recorded time of the last output; an array the C loop shares."""

    def __init__(self) -> None:
        self.arr = np.zeros(FDMAX, dtype=np.int64)
        self.extra: dict[int, int] = {}

    def get(self, fd: int, default: int = 0) -> int:
        return int(self.arr[fd]) if fd < FDMAX else self.extra.get(fd, default)

    def __setitem__(self, fd: int, value: int) -> None:
        if fd < FDMAX:
            self.arr[fd] = value
        else:
            self.extra[fd] = value


class LastInput:
    """fd -> (replay arrival, recorded arrival) of one thread's last input, its request until the
    thread answers on that fd; arrays the C loop shares while that thread runs."""

    def __init__(self) -> None:
        self.has = np.zeros(FDMAX, dtype=np.int64)
        self.vt = np.zeros(FDMAX, dtype=np.int64)
        self.rec = np.zeros(FDMAX, dtype=np.int64)
        self.extra: dict[int, tuple[int, int]] = {}
        self.addresses = (self.has.ctypes.data, self.vt.ctypes.data, self.rec.ctypes.data)  # for the C loop

    def __setitem__(self, fd: int, value: tuple[int, int]) -> None:
        if fd < FDMAX:
            self.has[fd], self.vt[fd], self.rec[fd] = 1, value[0], value[1]
        else:
            self.extra[fd] = value

    def __contains__(self, fd: int) -> bool:
        return fd in self.extra if fd >= FDMAX else bool(self.has[fd])

    def peek(self, fd: int) -> tuple[int, int]:
        return self.extra[fd] if fd >= FDMAX else (int(self.vt[fd]), int(self.rec[fd]))

    def pop(self, fd: int, default: tuple[int, int] | None = None) -> tuple[int, int] | None:
        if fd >= FDMAX:
            return self.extra.pop(fd, default)
        if not self.has[fd]:
            return default
        self.has[fd] = 0
        return int(self.vt[fd]), int(self.rec[fd])


class Pending:
    """fd -> how many threads hold an unanswered input (request) on it; an array the C loop shares."""

    def __init__(self) -> None:
        self.arr = np.zeros(FDMAX, dtype=np.int64)
        self.extra: dict[int, int] = {}

    def get(self, fd: int) -> int:
        return int(self.arr[fd]) if fd < FDMAX else self.extra.get(fd, 0)

    def add(self, fd: int, by: int) -> None:
        if fd < FDMAX:
            self.arr[fd] += by
        else:
            self.extra[fd] = self.extra.get(fd, 0) + by


@dataclass
class Rules:
    """The dispatch sets (replay/syscall_sets.py, from the syscall table), as the engine hands them over."""

    reads: dict[int, int]
    writes: dict[int, int]
    clocks: set[int]
    barriers: frozenset[int]       # syscalls that change fd state or need the exit stop
    generic_always: frozenset[int]  # answered from the log whatever the fd
    generic_emulated: frozenset[int]  # answered from the log when the fd is emulated
    fd_checked: frozenset[int]     # the engine compares the fd with the recorded one
    targets: dict[int, dict[int, int]]  # nr -> {region: argument index}
    input_waits: frozenset[int]
    external_nrs: frozenset[int]
    blocked_ns: int
    fcntl_dupfd: frozenset[int]
    futex_real_ops: frozenset[int]  # futex operations that run for real (the kernel writes memory)


@dataclass
class ThreadPlan:
    """Static per-event columns of one thread's recorded queue; kinds are decided per plan."""

    ops: np.ndarray               # (n, NCOLS) int64, the kp_op array handed to C
    kind_emu: np.ndarray          # kind when the event's fd is emulated at plan time
    kind_not: np.ndarray          # kind when it is not
    flags: np.ndarray             # static flags
    long_wait: np.ndarray         # input call that waited > blocked_ns
    ext_nr: np.ndarray            # external by syscall number (accept, poll, ...)
    index: np.ndarray             # global event index
    barrier_next: np.ndarray      # position of the next SLOW-in-any-case event at or after i
    writes: np.ndarray            # positions of K_WRITE candidates (for the output hashes)
    write_data: list[bytes]       # their recorded bytes, aligned with ``writes``
    index_list: list[int] = field(default_factory=list)  # ``index`` as a list (bisect: no numpy call per plan)
    writes_list: list[int] = field(default_factory=list)  # ``writes`` as a list (bisect per answered run)

    def __post_init__(self) -> None:
        if not self.index_list:
            self.index_list = self.index.tolist()
        if not self.writes_list:
            self.writes_list = np.asarray(self.writes).tolist()
        self.index = np.ascontiguousarray(self.index, dtype=np.int64)
        self.ops_address, self.index_address = self.ops.ctypes.data, self.index.ctypes.data

    @classmethod
    def build(cls, queue: list, pred_exit: dict[int, int], rules: Rules, blob: bytearray,
              python_fds: frozenset[int] = frozenset()) -> ThreadPlan:
        """Columns from the events in bulk; a Python pass only over events that carry bytes. Reads
        and writes on ``python_fds`` are left to Python (requests handed between threads)."""
        n = len(queue)
        ops = np.zeros((n, NCOLS), dtype=np.int64)
        ops[:, RARG:RARG + 3] = -1
        pe = pred_exit.get
        cols = np.array([(e.nr, e.ret, e.enter_ns, e.exit_ns, e.index, pe(e.index, NONE)) for e in queue],
                        dtype=np.int64).reshape(n, 6)
        nr, ret, enter, exit_, index = cols[:, 0], cols[:, 1], cols[:, 2], cols[:, 3], cols[:, 4]
        arg0 = np.array([e.args[0] for e in queue], dtype=np.uint64).view(np.int64)
        ops[:, RET], ops[:, ENTER], ops[:, EXIT], ops[:, ARG0], ops[:, NR] = ret, enter, exit_, arg0, nr
        ops[:, PRED] = cols[:, 5]
        fd = arg0 & 0xFFFFFFFF
        ops[:, FD] = fd
        tab = _tables(rules)
        known = nr < len(tab.kind_emu)
        nrc = np.where(known, nr, 0)
        kind_emu = np.where(known, tab.kind_emu[nrc], K_PASS)
        kind_not = np.where(known, tab.kind_not[nrc], K_PASS)
        flags = np.where(known, tab.flags[nrc], 0)
        long_wait = known & tab.input_wait[nrc] & (exit_ - enter > rules.blocked_ns)
        ext_nr = known & tab.external[nrc]
        rw = known & (tab.is_read[nrc] | tab.is_write[nrc])
        slow = ((fd >= FDMAX) | np.isin(fd, np.fromiter(python_fds, dtype=np.int64, count=len(python_fds)))) & (
            rw | long_wait)
        for i in np.nonzero(nr == NR_FCNTL)[0].tolist():
            slow[i] |= queue[i].args[1] in rules.fcntl_dupfd
        for i in np.nonzero(nr == NR_FUTEX)[0].tolist():
            slow[i] |= (queue[i].args[1] & FUTEX_CMD_MASK) in rules.futex_real_ops
        rows, writes, slow_at = cls._bytes(queue, np.nonzero(known & tab.has_bytes[nrc])[0].tolist(), rules, blob)
        slow[slow_at] = True
        if rows:
            m = np.array(rows, dtype=np.int64)
            ops[m[:, 0], ROFF + m[:, 1]] = m[:, 2]
            ops[m[:, 0], RLEN + m[:, 1]] = m[:, 3]
            ops[m[:, 0], RARG + m[:, 1]] = m[:, 4]
        slow |= (kind_emu == K_SLOW) | (kind_not == K_SLOW)
        kind_emu = np.where(slow, K_SLOW, kind_emu)
        kind_not = np.where(slow, K_SLOW, kind_not)
        flags |= np.where(kind_emu != kind_not, F_FDCHECK, 0)
        slow_at = np.nonzero(slow)[0]
        pos = np.arange(n)
        nxt = np.full(n, n, dtype=np.int64)
        if slow_at.size:  # next slow position at or after each i
            k = np.searchsorted(slow_at, pos)
            nxt = np.where(k < slow_at.size, slow_at[np.minimum(k, slow_at.size - 1)], n)
        wpos = np.nonzero(kind_emu == K_WRITE)[0]
        return cls(ops, kind_emu, kind_not, flags, long_wait, ext_nr, index, nxt, wpos,
                   [queue[i].regions[0][: queue[i].ret] for i in wpos.tolist()])

    @staticmethod
    def _bytes(queue: list, positions: list[int], rules: Rules,
               blob: bytearray) -> tuple[list[tuple[int, int, int, int, int]], list[int], list[int]]:
        """Reads and writes (region 0 up to the return value), clock values, generic targets into
        the blob: (position, slot, offset, length, argument) rows, write positions, slow positions."""
        rows: list[tuple[int, int, int, int, int]] = []
        writes: list[int] = []
        slow: list[int] = []
        clocks, wr, rd, targets = rules.clocks, rules.writes, rules.reads, rules.targets
        for i in positions:
            e = queue[i]
            r, nr, regions = e.ret, e.nr, e.regions
            if nr in clocks:
                r0 = regions.get(0)
                if r0 is not None:
                    if len(r0) < 16:
                        slow.append(i)
                    rows.append((i, 0, len(blob), 16, -1))
                    blob += r0[:16]
            elif nr in wr:
                data = regions.get(0, b"")[: max(r, 0)]
                if r < 0 or len(data) != r:
                    slow.append(i)
                    continue
                rows.append((i, 0, len(blob), r, -1))
                blob += data
                writes.append(i)
            elif nr in rd:
                data = regions.get(0, b"")[: max(r, 0)]
                rows.append((i, 0, len(blob), len(data), 1))
                blob += data
            elif r >= 0:
                slot = 0
                for region, arg in sorted(targets.get(nr, {}).items()):
                    if region in regions:
                        rows.append((i, slot, len(blob), len(regions[region]), arg))
                        blob += regions[region]
                        slot += 1
        return rows, writes, slow


@dataclass
class _Tables:
    """Per syscall number (< NR_MAX): kinds and static flags, derived once from the engine's rules."""

    kind_emu: np.ndarray
    kind_not: np.ndarray
    flags: np.ndarray
    input_wait: np.ndarray
    external: np.ndarray
    is_read: np.ndarray
    is_write: np.ndarray
    has_bytes: np.ndarray


def _tables(rules: Rules) -> _Tables:
    """Mirrors rules.apply's order of checks, per syscall number."""
    size = NR_MAX
    t = _Tables(np.full(size, K_PASS, dtype=np.int64), np.full(size, K_PASS, dtype=np.int64),
                np.zeros(size, dtype=np.int64), *(np.zeros(size, dtype=bool) for _ in range(5)))
    for nr in range(size):
        not_emu = K_SKIP if nr in rules.generic_always else K_PASS
        if nr in rules.clocks:
            emu = not_emu = K_CLOCK
        elif nr in rules.barriers:
            emu = not_emu = K_SLOW
        elif nr in rules.writes:
            emu = K_WRITE if rules.writes[nr] == Buf.PLAIN else K_SLOW
        elif nr in rules.reads:
            emu = K_SKIP if rules.reads[nr] == Buf.PLAIN and nr != NR_RECVFROM else K_SLOW
            t.flags[nr] |= F_MARK_INPUT
        elif not_emu == K_SKIP or nr in rules.generic_emulated:
            emu = K_SKIP
        else:
            emu = not_emu = K_PASS
        t.kind_emu[nr], t.kind_not[nr] = emu, not_emu
        t.flags[nr] |= (F_FDCHECK if nr in rules.fd_checked else 0) | (F_WRITE if nr in rules.writes else 0)
        t.input_wait[nr] = nr in rules.input_waits
        t.external[nr] = nr in rules.external_nrs
        t.is_read[nr], t.is_write[nr] = nr in rules.reads, nr in rules.writes
        t.has_bytes[nr] = emu in (K_SKIP, K_WRITE, K_CLOCK) or not_emu == K_SKIP
    return t


@dataclass
class FastPath:
    """Owns the C context, the shared fd tables and the per-thread plans of one replay."""

    lib: ctypes.CDLL
    rules: Rules
    out_shift: OutShift = field(default_factory=OutShift)
    pending: Pending = field(default_factory=Pending)
    plans: dict[int, ThreadPlan] = field(default_factory=dict)
    handled: int = 0

    def __post_init__(self) -> None:
        self.blob_buf: ctypes.Array | None = None
        self.planned: dict[int, tuple] = {}    # id(plan) -> (fd state, start, end) of its decided range
        self.req = np.zeros(3 * REQ_CAP, dtype=np.int64)
        self.scratch = ctypes.create_string_buffer(1 << 20)
        self.ctx = _Ctx()
        c = self.ctx
        c.req, c.req_cap = self.req.ctypes.data, REQ_CAP
        c.out_shift = self.out_shift.arr.ctypes.data
        c.pending = self.pending.arr.ctypes.data
        c.scratch, c.scratch_len = ctypes.addressof(self.scratch), len(self.scratch)
        c.notif_fd, c.sigfd = -1, -1
        self.thr = (_Thr * MAX_THREADS)()
        self.seg = np.zeros(3 * SEG_CAP, dtype=np.int64)
        c.thr, c.seg, c.seg_cap = ctypes.addressof(self.thr), self.seg.ctypes.data, SEG_CAP

    def event(self) -> tuple:
        """ctx.ev as ("p", tid, status) or ("n", tid, NotifRegs)."""
        ev = self.ctx.ev
        if ev.kind == EV_PTRACE:
            return ("p", int(ev.tid), int(ev.status))
        a = [x & 0xFFFFFFFFFFFFFFFF for x in ev.args]
        return ("n", int(ev.tid), NotifRegs(int(ev.nr), *a, id=int(ev.id)))

    def wait(self, timeout_ms: int) -> tuple | None:
        """The next ptrace stop or notification (None on timeout); timeout_ms < 0 blocks."""
        got = int(self.lib.kp_wait(ctypes.byref(self.ctx), timeout_ms))
        if got < 0:
            raise OSError(-got, "replay: waiting for the tracee failed")
        return self.event() if got else None

    def respond(self, notif_id: int, value: int, run_it: bool = False) -> None:
        """Answer a notified syscall with ``value`` (or let the kernel run it)."""
        err = int(self.lib.kp_respond(self.ctx.notif_fd, notif_id, value, 1 if run_it else 0))
        if err:
            raise OSError(-err, "replay: answering a seccomp notification failed")

    def close(self) -> None:
        for fd in (self.ctx.sigfd, self.ctx.notif_fd):
            if fd >= 0:
                os.close(fd)
        self.ctx.sigfd = self.ctx.notif_fd = -1

    def prepare(self, by_rtid: dict[int, list], pred_exit: dict[int, int], cache: dict,
                python_fds: frozenset[int] = frozenset()) -> None:
        """Every thread's static plan columns and the region blob: built once per log (``cache``
        is the log's), the op arrays copied per replay because plans rewrite kinds and flags."""
        built = cache.get("fastpath")
        if built is None:
            blob = bytearray()
            plans = {rtid: ThreadPlan.build(q, pred_exit, self.rules, blob, python_fds) for rtid, q in by_rtid.items()}
            built = cache["fastpath"] = (plans, ctypes.create_string_buffer(bytes(blob), max(len(blob), 1)))
        plans, self.blob_buf = built
        self.plans = {rtid: replace(p, ops=p.ops.copy()) for rtid, p in plans.items()}
        self.ctx.blob = ctypes.addressof(self.blob_buf)

    def plan(self, p: ThreadPlan, pos: int, limit: int, emulated: set[int], sockets: set[int],
             version: int | None = None) -> int:
        """Decide kinds and flags for p.ops[pos:end) with the current fd state; returns end, before
        the event at index ``limit`` (another thread's: where this one must stop and park).

        Kinds are decided for the thread's whole range up to its next barrier, once per fd state:
        a run often stops early (at a hand-over to another thread, or at an output whose logged copy
        has masked card data, which Python compares) and resumes inside the range planned last.
        ``version`` stands for the fd state when the caller counts its changes."""
        state = version if version is not None else (frozenset(emulated), frozenset(sockets))
        got = self.planned.get(id(p))
        if got is None or got[0] != state or not got[1] <= pos < got[2]:
            end = self._decide(p, pos, emulated, sockets)
            if end - pos < MIN_PLAN:
                self.planned.pop(id(p), None)
                return pos
            got = self.planned[id(p)] = (state, pos, end)
        end = got[2]
        if limit < (1 << 62):
            end = bisect.bisect_left(p.index_list, limit, pos, end)
        return end

    def _decide(self, p: ThreadPlan, pos: int, emulated: set[int], sockets: set[int]) -> int:
        """Kinds and flags of p.ops[pos:end) for this fd state, up to the next barrier; returns end."""
        end = min(int(p.barrier_next[pos]) if pos < len(p.index) else pos, pos + MAX_PLAN)
        if end - pos < MIN_PLAN:
            return pos
        fd = p.ops[pos:end, FD]
        emu = np.isin(fd, np.fromiter(emulated, dtype=np.int64, count=len(emulated)))
        sock = np.isin(fd, np.fromiter(sockets, dtype=np.int64, count=len(sockets)))
        kind = np.where(emu, p.kind_emu[pos:end], p.kind_not[pos:end])
        flags = p.flags[pos:end] | np.where(sock, F_SOCKET, 0)
        flags |= np.where(p.long_wait[pos:end] & (sock | p.ext_nr[pos:end]), F_EXT_WAIT, 0)
        flags &= ~np.where(emu, 0, F_MARK_INPUT)
        slow = np.nonzero(kind == K_SLOW)[0]
        if slow.size:
            end = pos + int(slow[0])
            kind, flags = kind[: end - pos], flags[: end - pos]
        p.ops[pos:end, KIND] = kind
        p.ops[pos:end, FLAGS] = flags
        return end

    def use_inputs(self, li: LastInput) -> None:
        """The running thread's requests: the C loop pairs its replies with them."""
        c = self.ctx
        c.li_has, c.li_vt, c.li_rec = li.addresses

    def set_order(self, next_other: np.ndarray, owner: np.ndarray) -> None:
        """The recorded order the loop hands over by: next_other[i + 1] is the next ordered event of
        another thread after event i; owner[i] the slot of event i's thread (-1: none)."""
        self._order = (next_other, owner)
        self.ctx.next_other, self.ctx.owner = next_other.ctypes.data, owner.ctypes.data

    def slot(self, i: int, tid: int, p: ThreadPlan, th, end: int, last_ordered: int, parked: tuple | None) -> None:
        """Tell the loop about one thread: its plan up to ``end``, its state, the stop it is parked at."""
        t = self.thr[i]
        t.tid, t.ops, t.idx, t.pos, t.end = tid, p.ops_address, p.index_address, th.pos, end
        t.vt, t.prev_exit, t.arrival = th.vt, th.prev_exit, th.arrival
        t.li_has, t.li_vt, t.li_rec = th.inputs.addresses
        t.fs_base, t.last_ordered = th.fs_base, last_ordered
        t.parked, t.parks = 0, 0
        if parked is not None:
            self._preset_into(t.ev, parked)
            t.parked = 1

    def run_threads(self, cur: int, nthr: int, pid: int, memfd: int, deadline: float) -> int:
        """kp_run_threads from slot ``cur``; returns the events answered (the segments say for whom)."""
        c = self.ctx
        c.cur, c.nthr, c.memfd, c.pid = cur, nthr, memfd, pid
        c.deadline_ns = int(deadline * 1e9)  # time.monotonic is CLOCK_MONOTONIC
        done = int(self.lib.kp_run_threads(ctypes.byref(c)))
        self.handled += done
        return done

    def segments(self) -> list[list[int]]:
        """(slot, events answered, of which in the tracee) per run of a thread, in order."""
        return self.seg[: 3 * int(self.ctx.nseg)].reshape(-1, 3).tolist()

    @staticmethod
    def parked_event(t: _Thr) -> tuple:
        e = t.ev
        if e.kind == EV_PTRACE:
            return ("p", int(e.tid), int(e.status))
        a = [x & 0xFFFFFFFFFFFFFFFF for x in e.args]
        return ("n", int(e.tid), NotifRegs(int(e.nr), *a, id=int(e.id)))

    def sync(self, p: ThreadPlan, th, pos: int) -> int:
        """At a stop of the in-tracee table's owner that the C loop did not see: account the events
        the tracee answered itself since its last stop (from p.ops[pos]); returns how many."""
        c = self.ctx
        self.use_inputs(th.inputs)
        c.vt, c.prev_exit, c.arrival = th.vt, th.prev_exit, th.arrival
        done = int(self.lib.kp_vsync(ctypes.byref(c), p.ops.ctypes.data, pos))
        if done < 0:
            raise RuntimeError(f"replay: the in-tracee table's open events do not start at event {pos} of the plan")
        th.vt, th.prev_exit, th.arrival = c.vt, c.prev_exit, c.arrival
        self.handled += done
        return done

    @staticmethod
    def _preset_into(e: _Ev, ev: tuple) -> None:
        if ev[0] == "p":
            e.kind, e.tid, e.status = EV_PTRACE, ev[1], ev[2]
        else:
            r = ev[2]
            e.kind, e.tid, e.status, e.id, e.nr = EV_NOTIF, ev[1], 0, r.id, r.orig_rax
            for i, a in enumerate((r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9)):
                e.args[i] = a - (1 << 64) if a >= 1 << 63 else a

    def requests(self) -> list[list[int]]:
        """(fd, recorded ns, replay ns) of the requests the last run completed."""
        return self.req[: 3 * int(self.ctx.nreq)].reshape(-1, 3).tolist()
