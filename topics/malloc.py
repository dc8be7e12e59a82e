"""glibc malloc tuning for the processes that move multi-megabyte Kafka messages.

Why: a kprobe message is ~3 MB. glibc serves such sizes with a fresh mmap and returns them with
munmap when freed, so every message copied into Python (the Kafka consumer's value, numpy
temporaries of the insert block) touched new pages: ~760 page faults per message, and faults are
expensive in a VM. Measured on this 2-vCPU VM: consuming a 3 MB message cost 2.2 ms with the
defaults and 1.2 ms (no faults) with the thresholds below. Only the long-running scale-out
processes call this (the ingest dataflow, the Kafka agent); the cost is that up to
``trim_bytes`` of freed memory stays in the process instead of going back to the kernel.

Why in topics/: the tuning exists because of the size of the topics' messages (bounded by
``MAX_MESSAGE_BYTES`` in topics/names.py), and its two callers are the two ends of those topics
(agent/kafka_session.py producing, dataflows/ingest.py consuming); neither owns the other.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("kprobe")

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def keep_freed_memory(mmap_bytes: int = 64 << 20, trim_bytes: int = 512 << 20) -> bool:
    """Serve allocations below ``mmap_bytes`` from the heap and keep up to ``trim_bytes`` freed.

    Returns False (and changes nothing) where the C library is not glibc.
    """
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(M_MMAP_THRESHOLD, mmap_bytes)) and bool(mallopt(M_TRIM_THRESHOLD, trim_bytes))
    if not ok:
        log.warning("mallopt refused the thresholds: large allocations stay on mmap")
    return ok
