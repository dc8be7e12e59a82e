"""Where to uprobe libc's time functions, so vDSO clock reads (no syscall) are recorded cheaply.

Why not a uprobe on the function's entry plus a uretprobe: that costs hundreds of times a plain
clock_gettime per clock read (replay/README.md has the measurements). The first instruction of
glibc's ``__clock_gettime`` is a RIP-relative ``mov``, which a uprobe cannot emulate: the kernel
single-steps it out of line (a second trap), and the uretprobe adds a third kernel entry. A uprobe
on a conditional jump is emulated (one trap, ~1.8 µs measured), and glibc's wrapper has one right
before the vDSO call (``test rax, rax; je <syscall fallback>``, arguments still in rdi/rsi) and one
right after it (``call rax; test eax, eax; jne <error>``, the result in eax, the caller's buffer
filled). Two probes there: ~3.5 µs per clock read, about 4x cheaper. The vDSO itself is not a
file, so it cannot be probed at all.

Where the code does not have that shape (another libc build), the entry + uretprobe pair is used
as before and the attach errors say so. The syscall fallback path is not probed at its exit:
that clock read is a real syscall and recorded as one.
"""

from __future__ import annotations

import ctypes
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from kprobe.replay.elfsym import dynamic_functions, file_offset

# symbol -> (entry program, exit program at the jump after the vDSO call, uretprobe program)
TIME_PROBES = {
    "clock_gettime": ("kp_u_clock_gettime", "kp_ux_clock_gettime", "kp_ur_clock_gettime"),
    "gettimeofday": ("kp_u_gettimeofday", "kp_ux_gettimeofday", "kp_ur_gettimeofday"),
    "time": ("kp_u_time", "kp_ux_time", "kp_ur_time"),
}
# test rax, rax; je rel8 | <anything up to 16 bytes without another jump>; call rax; test eax, eax; jne rel8
_AROUND_VDSO_CALL = re.compile(rb"\x48\x85\xc0(\x74).(?:[^\x70-\x7f\xe8\xe9\xeb\xff]{0,16}?)\xff\xd0\x85\xc0(\x75).",
                               re.DOTALL)
# what may come before the entry jump: loads of the vDSO pointer into rax only (rdi, rsi untouched)
_PROLOGUE = re.compile(rb"(?:\xf3\x0f\x1e\xfa|\x48\x8b\x05.{4}|\x48\x8b\x80.{4}|\x48\x8b\x40.)*\Z", re.DOTALL)


class _UprobeOpts(ctypes.Structure):
    """struct bpf_uprobe_opts of libbpf 1.1 (sz first, so newer libbpf accepts it too)."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("ref_ctr_offset", ctypes.c_size_t),
        ("bpf_cookie", ctypes.c_uint64),
        ("retprobe", ctypes.c_bool),
        ("func_name", ctypes.c_char_p),
    ]


@dataclass(frozen=True)
class ProbePoint:
    """Where one time function is probed: file offsets in libc."""

    symbol: str
    entry: int
    exit: int | None        # the jump after the vDSO call; None: use a uretprobe instead


def libc_path() -> str:
    """The libc this machine's dynamically linked programs use (from our own mappings)."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        path = line.split()[-1] if len(line.split()) >= 6 else ""
        name = os.path.basename(path)
        if name.startswith("libc.so") or name.startswith("libc-"):
            return path
    raise FileNotFoundError("libc not found in /proc/self/maps")


def around_vdso_call(code: bytes) -> tuple[int, int] | None:
    """Offsets of the jump before and the jump after the vDSO call in a time function's code."""
    m = _AROUND_VDSO_CALL.search(code[:96])
    if m is None or not _PROLOGUE.match(code[: m.start()]):
        return None
    return m.start(1), m.start(2)


@lru_cache(maxsize=4)
def probe_points(path: str) -> tuple[list[ProbePoint], list[str]]:
    """Probe points of the time functions in the libc at ``path`` (parsed once), and what cannot
    be probed (glibc binds gettimeofday/time as IFUNCs straight to the vDSO: no libc code runs)."""
    image = Path(path).read_bytes()
    syms = dynamic_functions(image)
    points, missing = [], []
    for symbol in TIME_PROBES:
        if symbol not in syms:
            missing.append(f"libc {symbol} is not a plain function (IFUNC to the vDSO): its reads are "
                           "synthesized at replay from the recorded timeline")
            continue
        start = file_offset(image, syms[symbol].value)
        jumps = around_vdso_call(image[start : start + 96])
        points.append(ProbePoint(symbol, start + jumps[0], start + jumps[1]) if jumps else ProbePoint(symbol, start, None))
    return points, missing


def attach(lib: ctypes.CDLL, programs: dict, pid: int) -> tuple[list[int], list[str]]:
    """Attach the time probes for process ``pid`` (-1: every process). Returns (links, errors)."""
    fn = lib.bpf_program__attach_uprobe_opts
    fn.restype = ctypes.c_void_p
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p]
    try:
        path = libc_path()
        points, errors = probe_points(path)
    except (OSError, ValueError) as e:
        return [], [f"libc symbols: {e}"]
    errors = list(errors)
    links: list[int] = []
    for p in points:
        enter, after_call, ret = TIME_PROBES[p.symbol]
        plan = ([(enter, p.entry, False), (after_call, p.exit, False)] if p.exit is not None
                else [(enter, p.entry, False), (ret, p.entry, True)])
        if p.exit is None:
            errors.append(f"libc {p.symbol}: no jump around its vDSO call found: entry + uretprobe (slower)")
        for prog, offset, is_ret in plan:
            opts = _UprobeOpts(ctypes.sizeof(_UprobeOpts), 0, 0, is_ret, None)
            ctypes.set_errno(0)
            link = fn(programs[prog].ptr, pid, path.encode(), offset, ctypes.byref(opts))
            if link:
                links.append(int(link))
            else:
                errors.append(f"{prog} on {p.symbol}: {os.strerror(ctypes.get_errno() or 1)} "
                              "(its time reads will be synthesized at replay)")
    return links, errors
