"""Syscalls and clock reads answered inside the tracee, without a stop (the table side and the
stubs are in fastpath.c, which explains the protocol).

Why: every answer used to cost a trapped syscall, i.e. two context switches (~10-15 µs on this
VM), although for a service's steady state the answer is fully decided by the log and the
thread's virtual time: a recorded request copied into the buffer, a clock value, an fsync's
return value, an output compared with the recorded bytes. Round trips, not their cost, bounded
replay speed (README, "Speed").

How: at the first ptrace stop of the main thread after its TLS is set up, the tracer makes the
tracee run one extra syscall instead of the trapped one (``mmap`` of shared anonymous pages,
read-write-execute, near libc; the trapped syscall is then restarted unchanged), maps the same
pages into itself through ``/proc/<pid>/map_files``, copies the stubs from the hot-path library to
their start and points the vDSO's clock_gettime/gettimeofday/time entries at them (``movabs rax,
stub; jmp rax``) and the single-threaded fast path of libc's hot wrappers at the syscall stub
(``call`` through a small trampoline, see :meth:`AnswerTable._patch_libc`). The table follows: header,
up to ``CAP`` planned answers, their recorded bytes. The compiled hot path fills it when it answers
a stop of the owner thread and accounts what was taken at that thread's next stop; the Python
engine has the same accounting done (``FastPath.sync``) when it gets that stop itself. Only the
main thread uses the table (the stubs compare the fs base); anything else traps as before.

The extra mmap is not a recorded event: anonymous mappings are never trapped (seccomp.ALLOWED), so
the expected event stream is unchanged; it only moves later anonymous mappings' addresses, which
ASLR already does. Used only with the compiled hot path (strict replays without injections: a
what-if replay needs each answer computed with the injected delays, in Python) and when the CPU has
FSGSBASE (``rdfsbase`` in the stubs); otherwise every call traps as before.
"""

from __future__ import annotations

import ctypes
import os
import struct
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from kprobe.replay import tracee as T
from kprobe.replay.elfsym import dynamic_functions, executable_segments
from kprobe.schemas import syscall_table as ST

PAGE = 4096
TABLE = PAGE                         # the table's offset in the mapping (the stubs assume 0x1000)
HDR_WORDS, ENT_WORDS = 16, 8         # VT_HDR, VT_ENT in fastpath.c
CAP = (0x10000 - 8 * HDR_WORDS) // (8 * ENT_WORDS)
DATA, DATACAP = 0x10000, 1 << 20     # recorded bytes of the open gap, from the table's start
SIZE = TABLE + DATA + DATACAP
OWNER, REMAINING, END, GAP_POS, GAP_N, ANSWERED, VCAP, NRMASK, VDATA, VDATACAP = range(10)
STUBS = {"__vdso_clock_gettime": 0x00, "__vdso_gettimeofday": 0x80, "__vdso_time": 0x100}
SYSCALL_STUB, TRAMPOLINES = 0x180, 0x400
# libc wrappers whose single-threaded fast path may call the syscall stub: name -> (nr, NRMASK bit)
# (the bits are fastpath.c's stub_bytes)
WRAPPERS = {name: (ST.nr(name), bit) for bit, name in
            enumerate(("read", "write", "pread64", "pwrite64", "fsync", "fdatasync", "getrandom"))}
# `mov eax, futex; syscall; ret`: a futex call that is the last thing its function does (glibc's
# __lll_lock_wake and __lll_lock_wake_private: every unlock of a contended mutex). Its own NRMASK bit
# after the wrappers' and its own trampoline (fastpath.c's stub_bytes).
NR_FUTEX = ST.nr("futex")
FUTEX_TAIL = b"\xb8" + struct.pack("<I", NR_FUTEX) + b"\x0f\x05\xc3"
FUTEX_BIT = len(WRAPPERS)
PROT_RWX, MAP_SHARED_ANON = 7, 0x21
NR_MMAP = ST.nr("mmap")
SETUP_STOPS = 2  # the injected mmap's exit stop and the restarted syscall's second seccomp stop
TAIL = b"\x0f\x05\x48\x3d\x00\xf0\xff\xff\x77"  # syscall; cmp rax, -4096; ja (then rel8, ret)
# after that `ja` in glibc's multi-threaded path: mov edi, r8d / mov edi, edx (+ the next byte)
AFTER_MT = (b"\x44\x89\xc7", b"\x89\xd7\x89", b"\x89\xd7\x48")


def supported() -> bool:
    """The stubs identify the owner thread with ``rdfsbase`` (FSGSBASE, enabled by Linux >= 5.9)."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " fsgsbase" in line for line in f)
    except OSError:
        return False


def stub_code(lib: ctypes.CDLL) -> bytes:
    begin = ctypes.cast(lib.kp_vstub_begin, ctypes.c_void_p).value or 0
    end = ctypes.cast(lib.kp_vstub_end, ctypes.c_void_p).value or 0
    return ctypes.string_at(begin, end - begin)


def libc_mapping(pid: int) -> tuple[int, str] | None:
    """(load address, path) of the tracee's libc, if it has one mapped."""
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and "/libc.so" in parts[5] and int(parts[2], 16) == 0:
                return int(parts[0].split("-")[0], 16), parts[5]
    return None


def mmap_call(regs, hint: int) -> None:
    """Turn the stopped syscall in ``regs`` into mmap(hint, SIZE, RWX, MAP_SHARED|MAP_ANONYMOUS);
    a hint near libc keeps the stubs in reach of a `call rel32` from its wrappers."""
    regs.orig_rax = NR_MMAP
    regs.rdi = hint
    regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9 = SIZE, PROT_RWX, MAP_SHARED_ANON, (1 << 64) - 1, 0


def restart(saved) -> None:
    """At the injected call's exit stop: back to the original syscall, to be made again."""
    saved.rip -= 2          # the `syscall` instruction
    saved.rax = saved.orig_rax


@lru_cache(maxsize=4)
def libc_sites(path: str, dev: int, ino: int, mtime_ns: int) -> tuple[dict[str, int], tuple[int, ...]]:
    """What the patching needs from the libc file, read and parsed once per file (identified by
    device, inode and mtime, so a replaced libc is read again): the addresses (as linked) of the
    WRAPPERS functions, and those of FUTEX_TAIL in its executable segments.

    Why cached: parsing libc's ~3000 dynamic symbols cost ~5 ms per replay, a sixth of a short one."""
    with open(path, "rb") as f:
        image = f.read()
    syms = dynamic_functions(image)
    wrappers = {name: syms[name].value for name in WRAPPERS if name in syms}
    tails = []
    for off, vaddr, size in executable_segments(image):
        at = image.find(FUTEX_TAIL, off, off + size)
        while at >= 0:
            tails.append(vaddr + at - off)
            at = image.find(FUTEX_TAIL, at + 1, off + size)
    return wrappers, tuple(tails)


def _patch_futex_tails(base: int, tails: tuple[int, ...], addr: int, local: int, mem: T.Memory, avoid: int) -> int:
    """Point every `mov eax, futex; syscall` that is followed by `ret` at the syscall stub (`call`
    through the futex trampoline, two nops, the `ret` kept). Returns the sites patched.

    Why: a contended mutex's unlock (futex wake) by the thread whose turn it is was a stop of its
    own, a third of all stops of a 4-worker pool's replay; the stub answers it with its recorded
    result exactly as the compiled loop did (same match: the syscall, in the plan's order). Why only
    before a `ret`: the `call` and the stub's pushes write below the stack pointer, which a leaf
    function may use (the red zone); right before its `ret` nothing there is read again. rdi, rsi,
    rdx and r10 (futex's arguments) stay as they were; rcx and r11 are clobbered, as by a syscall."""
    tramp = addr + TRAMPOLINES + 16 * FUTEX_BIT
    stub = addr + SYSCALL_STUB
    ctypes.memmove(local + TRAMPOLINES + 16 * FUTEX_BIT, b"\xb8" + struct.pack("<I", NR_FUTEX) + b"\xe9"
                   + struct.pack("<i", stub - (tramp + 10)), 10)
    sites = 0
    for vaddr in tails:
        at = base + vaddr
        rel = tramp - (at + 5)
        if at <= avoid < at + len(FUTEX_TAIL) or not -(1 << 31) <= rel < 1 << 31:
            continue
        if mem.read(at, len(FUTEX_TAIL)) != FUTEX_TAIL:
            continue  # not the file's bytes here (patched by someone else, or another mapping)
        mem.write(at, b"\xe8" + struct.pack("<i", rel) + b"\x90\x90")
        sites += 1
    return sites


@dataclass
class AnswerTable:
    """The table as the tracer sees it (shared memory: reads and writes cost nothing)."""

    tid: int                 # the owner thread (real tid)
    addr: int                # the pages in the tracee
    local: int               # the pages in this process
    tab: np.ndarray          # int64 view of the table's header
    wrappers: list[str]      # libc wrappers whose fast path calls the syscall stub

    @classmethod
    def install(cls, lib: ctypes.CDLL, pid: int, tid: int, fs_base: int, addr: int, mem: T.Memory,
                avoid: int) -> AnswerTable:
        """``avoid``: the address of the `syscall` instruction the owner is stopped at. It is restarted
        there after the set-up, so code around it is left as it is (that wrapper keeps trapping): with
        hot syscalls on ptrace stops the set-up stop can be inside libc's getrandom wrapper, and patching
        it under the stopped thread made the restart run the new bytes instead of the syscall."""
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                              ctypes.c_long]
        fd = os.open(f"/proc/{pid}/map_files/{addr:x}-{addr + SIZE:x}", os.O_RDWR)
        try:
            local = libc.mmap(None, SIZE, 3, 1, fd, 0)  # PROT_READ|PROT_WRITE, MAP_SHARED
        finally:
            os.close(fd)
        if local in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap of the tracee's answer table")
        code = stub_code(lib)
        assert len(code) <= TRAMPOLINES, "the stubs grew into the trampolines"
        ctypes.memmove(local, code, len(code))
        tab = np.ctypeslib.as_array(ctypes.cast(local + TABLE, ctypes.POINTER(ctypes.c_int64)), (HDR_WORDS,))
        tab[:] = 0
        tab[OWNER], tab[VCAP], tab[VDATA], tab[VDATACAP] = fs_base, CAP, DATA, DATACAP
        base, syms = T.vdso_symbols(pid, mem)
        for name, off in STUBS.items():
            sym = syms.get(name)
            if sym is not None and not base + sym.value <= avoid < base + sym.value + 12:  # movabs rax, stub; jmp rax
                mem.write(base + sym.value, b"\x48\xb8" + struct.pack("<Q", addr + off) + b"\xff\xe0")
        mask, patched = cls._patch_libc(pid, addr, local, mem, avoid)
        tab[NRMASK] = mask
        return cls(tid, addr, local, tab, patched)

    @staticmethod
    def _patch_libc(pid: int, addr: int, local: int, mem: T.Memory, avoid: int) -> tuple[int, list[str]]:
        """Point the syscalls of libc's hot wrappers at the syscall stub: `mov eax, NR; syscall;
        cmp rax, -4096` (or `xor eax, eax; ...` for read) becomes `call trampoline` plus nops; the
        trampoline sets eax and jumps to the stub, which ends with that cmp. Only this exact byte
        pattern is patched, and only where `ja error` is followed by what glibc does next in its
        single-threaded path (`ret`) or its multi-threaded one (the cancellation state back from
        r8 or edx into edi: the stub keeps r8, r9, rdx; rdi and rsi are dead there). So a
        multi-threaded service's hot calls are answered in the tracee too (replay/order.py lets only
        the running thread own the table)."""
        found = libc_mapping(pid)
        if found is None:
            return 0, []
        base, path = found
        try:
            st = os.stat(path)
            syms, tails = libc_sites(path, st.st_dev, st.st_ino, st.st_mtime_ns)
        except (OSError, ValueError, struct.error):
            return 0, []
        mask, patched = 0, []
        for i, (name, (nr, bit)) in enumerate(WRAPPERS.items()):
            value = syms.get(name)
            if value is None:
                continue
            fn = base + value
            head = (b"\x31\xc0" if nr == 0 else b"\xb8" + struct.pack("<I", nr)) + TAIL
            code = mem.read(fn, 192)
            tramp = addr + TRAMPOLINES + 16 * i
            stub = addr + SYSCALL_STUB
            ctypes.memmove(local + TRAMPOLINES + 16 * i, b"\xb8" + struct.pack("<I", nr) + b"\xe9"
                           + struct.pack("<i", stub - (tramp + 10)), 10)
            sites = 0
            at = code.find(head)
            while at >= 0:
                after = code[at + len(head) + 1 : at + len(head) + 4]
                rel = tramp - (fn + at + 5)
                if (after[:1] == b"\xc3" or after in AFTER_MT) and not fn + at <= avoid < fn + at + len(head) \
                        and -(1 << 31) <= rel < 1 << 31:  # not where the owner is stopped (install's docstring)
                    replaced = len(head) - 1  # up to and including the cmp
                    mem.write(fn + at, b"\xe8" + struct.pack("<i", rel) + b"\x90" * (replaced - 5))
                    sites += 1
                at = code.find(head, at + len(head))
            if sites:
                mask |= 1 << bit
                patched.append(name if sites == 1 else f"{name} (x{sites})")
        sites = _patch_futex_tails(base, tails, addr, local, mem, avoid)
        if sites:
            mask |= 1 << FUTEX_BIT
            patched.append(f"futex wake tails (x{sites})")
        return mask, patched

    @property
    def table_address(self) -> int:
        return self.local + TABLE

    @property
    def answered(self) -> int:
        """Syscalls and clock reads the stubs answered (the stubs count them)."""
        return int(self.tab[ANSWERED])

    @property
    def gap_open(self) -> bool:
        return bool(self.tab[GAP_N])

    def close(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        self.tab = np.zeros(0, dtype=np.int64)
        libc.munmap(ctypes.c_void_p(self.local), SIZE)
