"""Syscall rules: what replay does with a trapped call matched to its recorded event, by the
call's rule in the syscall table (schemas/syscall_table.py, classes in syscall_sets.py).

* fds are either *passthrough* (files opened read-only that exist here, directories: the real
  kernel serves them, e.g. Python's start-up reading its stdlib) or *emulated* (stdio, sockets,
  files opened for writing or missing here: the log answers). An emulated fd still holds a real fd
  number in the tracee: the creating call is rewritten to ``eventfd2`` so later opens get the same
  numbers as in the recording (checked at the syscall-exit stop).
* reads/recv/accept/getrandom/stat on emulated fds: the recorded bytes are written into the
  tracee's buffers and the recorded return value is returned; the real syscall never runs.
* writes/send on emulated fds: not executed; the bytes are compared with the recorded ones.
* futex and sched_yield are answered from the log like the rest, so no thread ever blocks on a
  sibling the order holds back.
"""

from __future__ import annotations

import collections
import errno
import os
import stat
import struct

from kprobe.masking import mask_same_length
from kprobe.replay import tracee as T
from kprobe.replay import vclock
from kprobe.replay.log import Event
from kprobe.replay.log_masking import matches_logged, overlay_logged
from kprobe.replay.order import Thread
from kprobe.replay.session import Request, Session
from kprobe.replay.syscall_sets import (
    ACCEPTS,
    ALWAYS_ANSWERED,
    CLONE_THREAD,
    FCNTL_DUPFD,
    FD_PAIRS,
    KEYED,
    NR_ACCEPT4,
    NR_CLONE,
    NR_CLONE3,
    NR_EVENTFD2,
    NR_FCNTL,
    NR_OPENAT,
    NR_RECVFROM,
    NR_SOCKET,
    NR_SOCKETPAIR,
    READS,
    RULE,
    SOCK_CLOEXEC,
    TARGETS,
    WRITES,
    Rule,
    futex_runs_for_real,
    sysname,
)

O_ACCMODE, O_CREAT, O_TRUNC, O_APPEND = 3, 0o100, 0o1000, 0o2000


def apply(s: Session, tid: int, th: Thread, regs, nr: int, args: tuple[int, ...], e: Event) -> str | None:
    """Carry out the matched event ``e`` by the syscall's rule (schemas/syscall_table.py)."""
    fd = args[0] & 0xFFFFFFFF
    rule = RULE.get(nr, Rule.PASS)
    if rule is Rule.OPEN:
        return open_path(s, tid, th, regs, nr, args, e)
    if rule is Rule.PAIR:
        return fd_pair(s, tid, th, regs, nr, args, e)
    if rule is Rule.NEW_FD or (rule is Rule.DUP and fd in s.emulated) or (
        nr == NR_FCNTL and args[1] in FCNTL_DUPFD and fd in s.emulated
    ):
        return placeholder(s, tid, th, regs, nr, args, e)
    if rule is Rule.CLONE:
        if e.ret > 0:
            s.clone_of[tid] = e.ret
            s.spawned[e.ret] = (e.exit_ns, th.vt)
        if nr == NR_CLONE and not args[0] & CLONE_THREAD or nr == NR_CLONE3:
            flags = args[0] if nr == NR_CLONE else s.mem.u64(args[0]) if s.mem else 0
            if not flags & CLONE_THREAD:
                return s.unsupported("the process forks a child: replay follows one process")
    elif rule is Rule.CLOSE:
        s.emulated.discard(fd)  # an emulated fd's close runs too: it closes the placeholder
        s.sockets.discard(fd)
        s.fd_version += 1
        s.fd_path.pop(fd, None)
    elif rule is Rule.MMAP:  # a file mapping
        fd = args[4] & 0xFFFFFFFF
        if fd in s.emulated:
            return s.unsupported(f"mmap of recorded fd {fd}: the file's contents are not in the log")
    elif rule is Rule.EXIT_GROUP:
        s.exiting = True
    elif futex_runs_for_real(nr, args):
        pass
    elif nr in WRITES and fd in s.emulated:
        return write(s, tid, th, regs, nr, args, e)
    elif nr in READS and fd in s.emulated:
        fill_read(s, nr, args, e)
        mark_input(s, fd, th, e)
        s.skip(tid, regs, e.ret)
        return None
    elif nr in ALWAYS_ANSWERED or (fd in s.emulated and (nr in KEYED or rule is Rule.ON_FD)):
        fill_generic(s, nr, args, e)
        s.skip(tid, regs, e.ret)
        return None
    s.passthrough(tid)
    return None


def open_path(s: Session, tid: int, th: Thread, regs, nr: int, args: tuple[int, ...], e: Event) -> str | None:
    assert s.mem is not None
    path_arg, flags = (args[1], args[2]) if nr == NR_OPENAT else (args[0], args[1])
    path = s.mem.cstr(path_arg).decode(errors="replace")
    writes = (flags & O_ACCMODE) != 0 or flags & (O_CREAT | O_TRUNC | O_APPEND)
    if e.ret < 0:
        s.skip(tid, regs, e.ret)
        return None
    if not writes and os.path.exists(path) and not _char_device(path):
        def check(t: int, r) -> str | None:
            got = r.rax - (1 << 64) if r.rax >= 1 << 63 else r.rax
            if got != e.ret:
                s.diverge(e.index, th.rtid, "fd", f"open {path} -> fd {e.ret}", f"fd {got}")
                return "abort" if s.strict else None
            s.fd_path[got] = path
            return None
        th.pending_exit = check
        T.to_exit(tid)
        return None
    s.fd_path[e.ret] = path
    return placeholder(s, tid, th, regs, nr, args, e, path)


def fd_pair(s: Session, tid: int, th: Thread, regs, nr: int, args: tuple[int, ...], e: Event) -> str | None:
    """Make the pipe/socketpair for real, check it got the recorded fd numbers, then emulate both."""
    if e.ret < 0:
        s.skip(tid, regs, e.ret)
        return None
    recorded = struct.unpack("<ii", e.regions.get(0, b"\xff" * 8)[:8])

    def check(t: int, r) -> str | None:
        assert s.mem is not None
        got = struct.unpack("<ii", s.mem.read(args[FD_PAIRS[nr]], 8))
        if got != recorded:
            s.diverge(e.index, th.rtid, "fd", f"{sysname(nr)} -> fds {recorded}", f"fds {got}")
            return "abort" if s.strict else None
        for fd in got:
            s.emulated.add(fd)
            s.fd_path[fd] = f"{sysname(nr)}:{fd}"
            if nr == NR_SOCKETPAIR:
                s.sockets.add(fd)
        s.fd_version += 1
        return None

    th.pending_exit = check
    T.to_exit(tid)
    return None


def placeholder(s: Session, tid: int, th: Thread, regs, nr: int, args, e: Event, path: str = "") -> str | None:
    """Run eventfd2 instead, so the fd number is taken in the tracee; check it is the recorded one."""
    if e.ret < 0:
        s.skip(tid, regs, e.ret)
        return None
    saved = (regs.rdi, regs.rsi)
    regs.orig_rax = NR_EVENTFD2
    regs.rdi, regs.rsi = 0, SOCK_CLOEXEC if (nr in (NR_SOCKET, NR_ACCEPT4) and args[1] & SOCK_CLOEXEC) else 0
    T.set_regs(tid, regs)
    if nr in ACCEPTS:
        fill_generic(s, nr, args, e)
    if nr == NR_SOCKET or nr in ACCEPTS:
        s.sockets.add(e.ret)
    s.emulated.add(e.ret)
    s.fd_version += 1

    def check(t: int, r) -> str | None:
        got = r.rax - (1 << 64) if r.rax >= 1 << 63 else r.rax
        r.rdi, r.rsi = saved
        T.set_regs(t, r)
        if got != e.ret:
            s.diverge(e.index, th.rtid, "fd", f"{sysname(nr)} -> fd {e.ret}", f"fd {got}")
            return "abort" if s.strict else None
        if nr in ACCEPTS:
            mark_input(s, e.ret, th, e)
        return None

    th.pending_exit = check
    T.to_exit(tid)
    return None


def mark_input(s: Session, fd: int, th: Thread, e: Event) -> None:
    key = fd if e.nr not in ACCEPTS else e.ret
    if key in s.prep.handoff_fds:
        s.handoff.setdefault(key, collections.deque()).append((th.arrival, e.exit_ns))
        return
    if key not in th.inputs:
        s.pending.add(key, 1)
    th.inputs[key] = (th.arrival, e.exit_ns)


def write(s: Session, tid: int, th: Thread, regs, nr: int, args, e: Event) -> str | None:
    assert s.mem is not None
    fd = args[0] & 0xFFFFFFFF
    actual = gather(s, nr, args)
    n = min(len(actual), e.ret) if e.ret >= 0 else len(actual)
    expected = e.regions.get(0, b"")[: max(e.ret, 0)]
    # The log holds card data masked (per stream, replay/log_masking.py): where it has '*', any byte
    # matches; what is hashed or shown is never less masked than the log.
    same = matches_logged(actual[:n], expected[:n]) and not (e.ret >= 0 and len(actual) < e.ret)
    if not same:
        s.diverge(e.index, th.rtid, "bytes", _show(expected),
                      _show(overlay_logged(actual[: max(n, len(actual))], expected)))
        if s.strict:
            return "abort"
    out = expected[:n] if same else overlay_logged(actual[:n], expected)
    s.output(fd, out if e.ret >= 0 else b"")
    req = request_answered(s, th, fd)
    if req is not None and fd in s.sockets:
        vt_in, rec_in = req
        s.res.requests.append(Request(fd, (e.enter_ns - rec_in) / 1e6, (th.vt - e.dur_ns - vt_in) / 1e6))
    s.skip(tid, regs, e.ret)
    return None


def request_answered(s: Session, th: Thread, fd: int) -> tuple[int, int] | None:
    """(replay, recorded) arrival of the request an output on ``fd`` answers: the thread's own
    last input there, else (a reply by a worker to what a reader thread read) the oldest one
    another thread holds."""
    if fd in s.prep.handoff_fds:
        if fd not in s.sockets:
            return None
        q = s.handoff.get(fd)
        if q:
            s.handoff_last[fd] = q.popleft()
        # nothing newer: one read carried several requests (answered one by one), all of which
        # arrived with it
        return s.handoff_last.get(fd)
    req = th.inputs.pop(fd, None)
    if req is None and fd in s.sockets and s.pending.get(fd) > 0:
        holders = [t for t in s.threads.values() if t is not th and fd in t.inputs]
        if holders:
            oldest = min(holders, key=lambda t: t.inputs.peek(fd)[1])
            req = oldest.inputs.pop(fd, None)
    if req is not None:
        s.pending.add(fd, -1)
    return req


def gather(s: Session, nr: int, args) -> bytes:
    assert s.mem is not None
    kind = WRITES[nr]
    if kind == 1:
        return s.mem.read(args[1], min(args[2], 1 << 24))
    if kind == -1:
        iov, cnt = args[1], args[2]
    else:
        hdr = s.mem.read(args[1], 56)
        iov, cnt = struct.unpack_from("<QQ", hdr, 16)
    return b"".join(s.mem.read(b, min(n, 1 << 24)) for b, n in s.mem.iovecs(iov, cnt))


def fill_read(s: Session, nr: int, args, e: Event) -> None:
    assert s.mem is not None
    data = e.regions.get(0, b"")[: max(e.ret, 0)]
    kind = READS[nr]
    if kind == 1:
        s.mem.write(args[1], data)
        if nr == NR_RECVFROM and args[4] and args[5] and 1 in e.regions:
            s.mem.write(args[4], e.regions[1])
            s.mem.write(args[5], e.regions.get(2, b"")[:4])
        return
    if kind == -1:
        iov, cnt = args[1], args[2]
    else:
        hdr = s.mem.read(args[1], 56)
        name, _nl, iov, cnt = struct.unpack_from("<QI4xQQ", hdr, 0)
        if 2 in e.regions:  # namelen, controllen, flags as the kernel left them
            rec = e.regions[2]
            s.mem.write(args[1] + 8, rec[8:12])
            s.mem.write(args[1] + 40, rec[40:48])
            s.mem.write(args[1] + 48, rec[48:52])
        if name and 1 in e.regions:
            s.mem.write(name, e.regions[1])
    off = 0
    for base, n in s.mem.iovecs(iov, cnt):
        if off >= len(data):
            break
        s.mem.write(base, data[off : off + n])
        off += n


def fill_generic(s: Session, nr: int, args, e: Event) -> None:
    """Write each recorded out-region back where this syscall's arguments point."""
    assert s.mem is not None
    if e.ret < 0:
        return
    for region, arg in TARGETS.get(nr, {}).items():
        addr = args[arg]
        if addr and region in e.regions:
            s.mem.write(addr, e.regions[region])


def lenient(s: Session, tid: int, th: Thread, regs, nr: int, args) -> str | None:
    """What-if mode: match the next recorded event on the same channel (syscall and fd)."""
    fd = args[0] & 0xFFFFFFFF
    for j in range(th.pos, len(th.queue)):
        e = th.queue[j]
        if e.index in s.consumed or e.nr != nr:
            continue
        if nr in KEYED and (e.args[0] & 0xFFFFFFFF) != fd:
            continue
        th.queue.insert(th.pos, th.queue.pop(j))
        vclock.consume(s, th, e)
        return apply(s, tid, th, regs, nr, args, e)
    if nr in WRITES and fd in s.emulated:
        data = gather(s, nr, args)
        s.output(fd, mask_same_length(data)[0])
        s.skip(tid, regs, len(data))
        return None
    if s.guard is not None and (why := s.guard(s, tid, nr, args)) is not None:
        s.refused += 1
        if s.refused <= 20:
            s.res.notes.append(f"what-if: refused syscall {nr} ({why}): not in the recording, it would have "
                               "run for real")
        s.skip(tid, regs, -errno.EPERM)
        return None
    s.passthrough(tid)
    return None


def _char_device(path: str) -> bool:
    """/dev/urandom and friends: what they gave is an input like a socket's (answered from the
    log); read for real here, a SecureRandom or a session key would differ."""
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


def _show(b: bytes, limit: int = 120) -> str:
    text = b[:limit].decode("utf-8", "backslashreplace")
    return repr(text) + (f"... ({len(b)} bytes)" if len(b) > limit else "")
