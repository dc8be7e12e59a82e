"""Give up the capabilities a running recorder no longer needs.

Loading and attaching the probes, mounting tracefs and binding ports need much of root; once
they are done, the recorder keeps what its running work uses and nothing else, so a bug in the
code that parses what others send it (OTLP bodies, control-socket queries, the kubelet's pod
list, Kafka replies) cannot load a kernel module, mount, reconfigure the network or switch
users:

* CAP_BPF, CAP_PERFMON: operations on its own maps (watch lists, counters, block sums) and
  program statistics; the kernel checks them on every bpf() call when unprivileged BPF is off.
* CAP_SYS_PTRACE: /proc/<pid>/exe, environ and io of other users' processes (process identity,
  OTEL_SERVICE_NAME, memcg members' I/O).
* CAP_DAC_READ_SEARCH: cgroup and /proc files that are not world-readable.

Everything else leaves the effective, permitted, inheritable and bounding sets, and
no_new_privs stops an exec'd program from regaining any. The process stays uid 0 (the data
directory and control socket are root's), without CAP_DAC_OVERRIDE: root's files by their
owner bits only.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from pathlib import Path

from kprobe.agent.capabilities import CAP_NUMBERS, read_capsets

KEEP_RECORDING = frozenset({"BPF", "PERFMON", "SYS_PTRACE", "DAC_READ_SEARCH"})

_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_SYS_CAPSET = 126  # x86_64


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


@dataclass(frozen=True)
class Dropped:
    kept: list[str]
    dropped: list[str]
    threads_kept: list[str]   # "name(tid)" of other threads still holding more than ``kept`` (started earlier)


def drop_to(keep: frozenset[str] = KEEP_RECORDING) -> Dropped:
    """Reduce this process (all its threads: capsets are per thread, so call it before threads
    that parse input start, or accept that they keep theirs) to ``keep``; OSError if the kernel refuses."""
    libc = ctypes.CDLL(None, use_errno=True)
    before = read_capsets()
    mask = sum(1 << CAP_NUMBERS[n] for n in keep) & before.permitted
    for name, bit in CAP_NUMBERS.items():
        if name not in keep and before.bounding >> bit & 1:
            if libc.prctl(_PR_CAPBSET_DROP, bit, 0, 0, 0) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"dropping CAP_{name} from the bounding set: {os.strerror(err)}")
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        word = (mask >> (32 * i)) & 0xFFFFFFFF
        data[i].effective = data[i].permitted = word
        data[i].inheritable = 0
    if libc.syscall(_SYS_CAPSET, ctypes.byref(hdr), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"no_new_privs: {os.strerror(err)}")
    after = read_capsets()
    return Dropped(kept=[n for n, b in CAP_NUMBERS.items() if after.effective >> b & 1],
                   dropped=[n for n, b in CAP_NUMBERS.items() if before.effective >> b & 1 and not after.effective >> b & 1],
                   threads_kept=_threads_above(after.effective | after.bounding))


def _threads_above(mask: int) -> list[str]:
    """Threads of this process whose sets exceed ``mask``: the drop only reached the calling thread."""
    out = []
    for tid in os.listdir("/proc/self/task"):
        task = Path("/proc/self/task") / tid
        try:
            caps = read_capsets(task / "status")
            name = (task / "comm").read_text().strip()
        except OSError:
            continue   # exited meanwhile
        if (caps.effective | caps.permitted | caps.bounding) & ~mask:
            out.append(f"{name}({tid})")
    return out
