"""Unix socket paths of any length.

A socket address holds at most 107 bytes of path (``sun_path``), and a data directory can be
longer than that (a deep mount, a CI temp dir): the recorder must not fail to start, nor a client
fail to reach it, because of where the data lives. A longer path is reached through the directory
opened as a file descriptor, ``/proc/self/fd/N/name``: the kernel resolves it like any path, and
the socket file itself stays where it belongs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SUN_PATH_MAX = 107


@contextmanager
def address(path: Path) -> Iterator[str]:
    """An address for bind or connect that names ``path``, valid inside the block."""
    if len(os.fsencode(path)) <= SUN_PATH_MAX:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        short = f"/proc/self/fd/{fd}/{path.name}"
        if len(os.fsencode(short)) > SUN_PATH_MAX:
            raise OSError(f"socket name too long even beside its directory's descriptor: {path.name}")
        yield short
    finally:
        os.close(fd)
