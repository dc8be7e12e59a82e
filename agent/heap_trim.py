"""Give the C heap's free pages back to the kernel now and then (glibc ``malloc_trim``).

The recorder's Python side allocates and frees a batch's numpy and Arrow buffers every flush on
several threads (drain, writer, control socket, OTLP receiver), each with its own glibc arena.
glibc returns freed memory to the kernel only from the top of an arena, so a buffer still live above
a freed one keeps the freed pages resident until the arena happens to shrink. ``malloc_trim(0)``
walks every arena and releases the free pages inside them (MADV_DONTNEED). It takes ~1 ms here, so
the writer calls it on the code-trim tick (agent/code_pages.py), not after every flush. The
embedded engine allocates through its own jemalloc (sinks/chdb_malloc.py), which this does not
touch.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)


def trim() -> bool:
    """Returns whether glibc released memory; False also where the C library has no malloc_trim."""
    try:
        fn = ctypes.CDLL(None).malloc_trim   # the process's own C library: no ldconfig child
    except (OSError, AttributeError):
        log.debug("no malloc_trim in this C library")
        return False
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return bool(fn(0))
