"""Clock reads answered inside the tracee, without a stop (the table side is in fastpath.c).

Why: every vDSO clock read of a replayed process used to be one trapped syscall (~10-15 µs of
two context switches on this VM), although its answer is fully decided by the log and the
thread's virtual time. The ledger service makes one per request out of six trapped calls.

How: at the first ptrace stop of the main thread after its TLS is set up, the tracer makes the
tracee run one extra syscall instead of the trapped one (``mmap`` of two shared anonymous pages,
read-write-execute; the trapped syscall is then restarted unchanged), maps the same pages into
itself through ``/proc/<pid>/map_files``, copies the stubs from the hot-path library into the first
page and points the vDSO's clock_gettime/gettimeofday/time entries at them
(``movabs rax, stub; jmp rax``). The second page is the table: header plus up to ``CAP`` answers.
The compiled hot path fills it when the plan's next events are clock reads of the owner thread and
counts what was taken at that thread's next stop; the Python engine does the counting when it gets
that stop itself (:meth:`VClock.take`). Only the main thread uses the table (the stub compares the
fs base); reads from other threads, reads not in the log, unexpected clock ids trap as before.

The extra mmap is not a recorded event: anonymous mappings are never trapped (seccomp.ALLOWED), so
the expected event stream is unchanged; it only moves later anonymous mappings' addresses, which
ASLR already does. Used only with the compiled hot path (strict replays without injections) and
when the CPU has FSGSBASE (``rdfsbase`` in the stub); otherwise every clock read traps as before.
"""

from __future__ import annotations

import ctypes
import os
import struct
from dataclasses import dataclass

import numpy as np

from kprobe.replay import tracee as T

PAGE = 4096
SIZE = 2 * PAGE                      # stubs, then the table
HDR_WORDS, ENT_WORDS = 8, 8          # VT_HDR, VT_ENT in fastpath.c
CAP = (PAGE // 8 - HDR_WORDS) // ENT_WORDS
OWNER, REMAINING, END, GAP_POS, GAP_N, ANSWERED, VCAP = 0, 1, 2, 3, 4, 5, 6
STUBS = {"__vdso_clock_gettime": 0x00, "__vdso_gettimeofday": 0x80, "__vdso_time": 0x100}
PROT_RWX, MAP_SHARED_ANON = 7, 0x21
NR_MMAP = 9
SETUP_STOPS = 2  # the injected mmap's exit stop and the restarted syscall's second seccomp stop


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


def mmap_call(regs) -> None:
    """Turn the stopped syscall in ``regs`` into mmap(NULL, SIZE, RWX, MAP_SHARED|MAP_ANONYMOUS)."""
    regs.orig_rax = NR_MMAP
    regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9 = 0, SIZE, PROT_RWX, MAP_SHARED_ANON, (1 << 64) - 1, 0


def restart(saved) -> None:
    """At the injected call's exit stop: back to the original syscall, to be made again."""
    saved.rip -= 2          # the `syscall` instruction
    saved.rax = saved.orig_rax


@dataclass
class VClock:
    """The table as the tracer sees it (shared memory: reads and writes cost nothing)."""

    tid: int                 # the owner thread (real tid)
    addr: int                # the pages in the tracee
    local: int               # the pages in this process
    tab: np.ndarray          # int64 view of the table page

    @classmethod
    def install(cls, lib: ctypes.CDLL, pid: int, tid: int, fs_base: int, addr: int, mem: T.Memory) -> VClock:
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
            raise OSError(ctypes.get_errno(), "mmap of the tracee's clock table")
        code = stub_code(lib)
        ctypes.memmove(local, code, len(code))
        tab = np.ctypeslib.as_array(ctypes.cast(local + PAGE, ctypes.POINTER(ctypes.c_int64)), (PAGE // 8,))
        tab[:] = 0
        tab[OWNER] = fs_base
        tab[VCAP] = CAP
        base, syms = T.vdso_symbols(pid, mem)
        for name, off in STUBS.items():
            sym = syms.get(name)
            if sym is not None:  # movabs rax, stub; jmp rax
                mem.write(base + sym.value, b"\x48\xb8" + struct.pack("<Q", addr + off) + b"\xff\xe0")
        return cls(tid, addr, local, tab)

    @property
    def table_address(self) -> int:
        return self.local + PAGE

    @property
    def answered(self) -> int:
        """Clock reads the stubs answered (the stubs count them)."""
        return int(self.tab[ANSWERED])

    def take(self, lib: ctypes.CDLL) -> tuple[int, int] | None:
        """At a stop of the owner: (plan position, entries taken) of the open gap, which is closed;
        None when none is open."""
        got = int(lib.kp_vclock_take(ctypes.c_void_p(self.table_address)))
        return None if got < 0 else (got >> 16, got & 0xFFFF)

    def close(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        self.tab = np.zeros(0, dtype=np.int64)
        libc.munmap(ctypes.c_void_p(self.local), SIZE)
