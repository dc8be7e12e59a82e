"""The embedded engine's allocator tuned for an agent: freed memory goes back to the kernel.

chDB links its own jemalloc, built with ClickHouse's server options: freed pages are kept 5 s
before they are returned (``dirty_decay_ms:5000``) and heap profiling samples an allocation every
512 KiB with its backtrace (``prof_active:true``). A server wants the first (its next query reuses
the pages without faults) and can afford the second. An agent inserting a batch every second
churns through tens of MB per insert and merge; with the 5 s window, ~40 MB of freed pages were
resident at any time under pgbench (jemalloc's own stats, system.jemalloc_stats: resident 113 MB
for 61 MB allocated). A short decay returns them within ``DIRTY_DECAY_MS``; profiling is left
available but inactive (``SYSTEM JEMALLOC ENABLE PROFILE`` turns it on when someone debugs).
One arena instead of one per CPU, and thread caches only for blocks up to 1 KiB: the engine's
threads here are a few inserting and merging, not hundreds of concurrent queries, and every
arena and cache holds its own partly used pages (an open store doing inserts and queries: 89 -> 76
MB anonymous, jemalloc resident 61 -> 47 MB).

jemalloc reads ``JE_MALLOC_CONF`` (the prefixed build's name of MALLOC_CONF) once, when the library
initialises, so this must run before chDB's library is first imported in the process; afterwards
it cannot change anything and says so. Options the user already put in ``JE_MALLOC_CONF`` come
after ours and win.
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)

ENV = "JE_MALLOC_CONF"
DIRTY_DECAY_MS = 1000
AGENT_OPTIONS = (f"dirty_decay_ms:{DIRTY_DECAY_MS},muzzy_decay_ms:0,prof_active:false,"
                 "percpu_arena:disabled,narenas:1,tcache_max:1024")


def options(user: str | None) -> str:
    """The value of ``JE_MALLOC_CONF``: ours first, then the user's (jemalloc applies them in order)."""
    return f"{AGENT_OPTIONS},{user}" if user else AGENT_OPTIONS


def configure(environ: os._Environ[str] | dict[str, str] = os.environ) -> bool:
    """Sets the options for the engine this process will load; False when it is loaded already."""
    if any(name == "chdb" or name.startswith(("chdb.", "_chdb")) for name in sys.modules):
        log.debug("chDB already loaded: its allocator keeps the options it started with")
        return False
    current = environ.get(ENV, "")
    if AGENT_OPTIONS not in current:
        environ[ENV] = options(current or None)
    return True
