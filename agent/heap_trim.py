"""Give the C heap's and Arrow's free pages back to the kernel now and then.

The recorder's Python side allocates and frees a batch's numpy and Arrow buffers every flush on
several threads (drain, writer, control socket, OTLP receiver), each with its own glibc arena.
glibc returns freed memory to the kernel only from the top of an arena, so a buffer still live above
a freed one keeps the freed pages resident until the arena happens to shrink. ``malloc_trim(0)``
walks every arena and releases the free pages inside them (MADV_DONTNEED). It takes ~1 ms here, so
the writer calls it on the code-trim tick (agent/code_pages.py), not after every flush.

The batches' Arrow tables (sinks/chdb_store.py ``to_arrow``, dictionary-encoded strings) come from
Arrow's own pool, mimalloc, in a 1 GiB reservation: freed, its pages stayed resident (13-16 MB in
the recorder under pgbench, 58 MB after one 5M-string array in a test) until
``release_unused`` (mi_collect) returns them, ~0.5 ms per MB released. The writer builds those
tables, so it calls this from its own thread. The embedded engine allocates through its own
jemalloc (sinks/chdb_malloc.py), which this does not touch.
"""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)


def trim() -> bool:
    """Releases Arrow's unused pool memory (if Arrow is loaded) and the C heap's free pages; returns
    whether glibc released memory (False also where the C library has no malloc_trim)."""
    if (pa := sys.modules.get("pyarrow")) is not None:
        pa.default_memory_pool().release_unused()
    try:
        fn = ctypes.CDLL(None).malloc_trim   # the process's own C library: no ldconfig child
    except (OSError, AttributeError):
        log.debug("no malloc_trim in this C library")
        return False
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return bool(fn(0))
