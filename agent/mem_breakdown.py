"""Where a process's resident memory is, by kind: the numbers behind "the recorder uses N MB".

VmRSS alone cannot say whether a recorder is heavy because of its heap (what it allocates and
keeps), the code it maps (library pages it executed, shared with the page cache and dropped by
the kernel like any cache once unmapped), or the BPF rings (kernel memory mapped into it: their
data pages count as file pages of this process once touched). The kernel's own split
(/proc/PID/status: RssAnon, RssFile, RssShmem) is exact; /proc/PID/smaps names the mappings, so
the file part is split into the embedded engine's library, the other libraries and the rings, and
the anonymous part into the main heap, thread stacks and the other anonymous mappings (malloc
arenas of threads, numpy/Arrow buffers, the engine's allocations).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from kprobe.agent.code_pages import CHDB_LIBRARY, SHARED_OBJECTS, Mapping, mappings

_GUARD_MAX = 64 << 10


@dataclass
class Breakdown:
    """Resident kB of a process by kind; the first four from /proc/PID/status, the rest from smaps."""

    rss_kb: int = 0
    anon_kb: int = 0
    file_kb: int = 0
    shmem_kb: int = 0
    hwm_kb: int = 0
    chdb_code_kb: int = 0      # the engine's library (file pages it executed or read)
    other_code_kb: int = 0     # Python, numpy, Arrow, libbpf, libc ... (file pages)
    data_files_kb: int = 0     # other mapped files (not code)
    rings_kb: int = 0          # BPF ring buffers and mmapped BPF maps (anon_inode:bpf-*)
    heap_kb: int = 0           # [heap]: the main arena of malloc
    stacks_kb: int = 0         # [stack] and the thread stacks (anonymous, right after a guard page)
    anon_other_kb: int = 0     # other anonymous mappings: thread arenas, large buffers, the engine's allocations
    threads: int = 0

    def mb(self) -> dict[str, float]:
        """The same numbers in MB (threads as is), for `kprobe stats` and the bench."""
        return {k.removesuffix("_kb") + ("_mb" if k.endswith("_kb") else ""): (round(v / 1024, 1) if k.endswith("_kb") else v)
                for k, v in asdict(self).items()}


STATUS_KEYS = ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM", "Threads")


def status(pid: int | str = "self") -> dict[str, int]:
    """The memory lines of /proc/PID/status (kB; Threads as is): the kernel's own split, read by the
    recorder's self-cost sample, this breakdown and the overhead bench alike."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, val = line.partition(":")
        if key in STATUS_KEYS:
            out[key] = int(val.split()[0])
    return out


def classify(smaps: str, bd: Breakdown) -> None:
    """Adds each mapping's resident kB of ``smaps`` text to its kind in ``bd``."""
    prev: Mapping | None = None
    for m in mappings(smaps):
        # a thread stack is an anonymous rw mapping right after its one-page ---p guard (a malloc
        # arena's reserved tail is ---p too, but megabytes long)
        after_guard = (prev is not None and prev.end == m.start and prev.perms.startswith("---") and not prev.path
                       and prev.end - prev.start <= _GUARD_MAX)
        prev = m
        if m.path.startswith("anon_inode:bpf"):
            bd.rings_kb += m.rss_kb
            continue
        if m.path == "[heap]":
            bd.heap_kb += m.anon_kb
        elif m.path == "[stack]" or (not m.path and after_guard and "w" in m.perms):
            bd.stacks_kb += m.anon_kb
        else:
            bd.anon_other_kb += m.anon_kb   # includes the relocated data of libraries (~20 MB)
        if m.rss_kb > m.anon_kb and m.path.startswith("/"):
            name = Path(m.path).name
            if CHDB_LIBRARY in name:
                bd.chdb_code_kb += m.rss_kb - m.anon_kb
            elif SHARED_OBJECTS in name or "x" in m.perms:
                bd.other_code_kb += m.rss_kb - m.anon_kb
            else:
                bd.data_files_kb += m.rss_kb - m.anon_kb


def breakdown(pid: int | str = "self") -> Breakdown:
    """The resident memory of ``pid`` by kind. Raises OSError when the process is gone."""
    st = status(pid)
    bd = Breakdown(rss_kb=st.get("VmRSS", 0), anon_kb=st.get("RssAnon", 0), file_kb=st.get("RssFile", 0),
                   shmem_kb=st.get("RssShmem", 0), hwm_kb=st.get("VmHWM", 0), threads=st.get("Threads", 0))
    classify(Path(f"/proc/{pid}/smaps").read_text(), bd)
    return bd
