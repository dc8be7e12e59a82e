"""Unmap the clean code pages of large libraries that the recorder touched once and no longer runs.

chDB's library is ~0.5 GB of code and read-only data; start-up (static initialisers that register
every ClickHouse function, format and setting) touches ~180 MB of it once. Those pages stay mapped
and count as the recorder's resident memory for as long as it runs, although the steady state
(inserts, a merge, a query now and then) executes a small part of them. ``MADV_DONTNEED`` on a
read-only file mapping drops the process's mappings only: the page cache keeps the file's pages (the
kernel reclaims them like any unmapped cache) and the next execution of one faults it back in from
the cache (a minor fault, no disk read while it is cached). So the resident set becomes the code
actually in use.

The same holds for every other shared object (Arrow's ~60 MB of libraries, numpy, gRPC, libpython):
their start-up and first-use pages were another ~120 MB of the recorder's resident set under pgbench,
so the recorder trims every shared object (``SHARED_OBJECTS``), not the engine alone.

Only mappings that cannot hold private data are touched: not writable, and no anonymous (copied or
relocated) pages in them per /proc/self/smaps. A writable or relocated mapping would lose its
contents; those are skipped, never guessed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import re
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MADV_DONTNEED = 4
CHDB_LIBRARY = "_chdb"   # the embedded engine's shared object (chdb/_chdb.abi3.so)
SHARED_OBJECTS = ".so"   # matches every shared object's file name (libarrow.so.2600, _chdb.abi3.so, ...)
_HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+\s*(.*)$")


@dataclass(frozen=True)
class Mapping:
    start: int
    end: int
    perms: str
    path: str
    rss_kb: int
    anon_kb: int


def mappings(smaps: str) -> list[Mapping]:
    """The VMAs of an smaps text with their resident and anonymous sizes."""
    out: list[Mapping] = []
    head: tuple[int, int, str, str] | None = None
    rss = anon = 0

    def close() -> None:
        if head is not None:
            out.append(Mapping(head[0], head[1], head[2], head[3], rss, anon))

    for line in smaps.splitlines():
        m = _HEADER.match(line)
        if m:
            close()
            head = (int(m.group(1), 16), int(m.group(2), 16), m.group(3), m.group(4).strip())
            rss = anon = 0
        elif line.startswith("Rss:"):
            rss = int(line.split()[1])
        elif line.startswith("Anonymous:"):
            anon = int(line.split()[1])
    close()
    return out


def droppable(maps: list[Mapping], library: str) -> list[Mapping]:
    """Mappings of files whose name contains ``library`` (``SHARED_OBJECTS``: any shared object) that
    hold only clean file pages."""
    return [m for m in maps if library in Path(m.path).name and "w" not in m.perms and m.anon_kb == 0
            and m.rss_kb > 0]


def trim(library: str, smaps_path: str = "/proc/self/smaps") -> int:
    """Unmaps the clean resident pages of ``library``'s read-only mappings; returns the kB unmapped."""
    try:
        maps = droppable(mappings(Path(smaps_path).read_text()), library)
    except OSError as e:
        log.debug("cannot read %s: %s", smaps_path, e)
        return 0
    if not maps:
        return 0
    libc = ctypes.CDLL(None, use_errno=True)   # the process's own symbols: no ldconfig child
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    done = 0
    for m in maps:
        if libc.madvise(ctypes.c_void_p(m.start), m.end - m.start, MADV_DONTNEED) == 0:
            done += m.rss_kb
        else:
            log.debug("madvise(%s %x-%x) failed: errno %d", m.path, m.start, m.end, ctypes.get_errno())
    return done
