"""What every subcommand shares: the error exit, the data directory's default, the store's opening.

One copy each, so every command says an error the same way (``kprobe: error: ...`` on stderr,
exit 2 for bad arguments or environment, 1 for runtime failures) and finds the same recording.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def die(msg: str, code: int = 2) -> int:
    """Print ``msg`` as kprobe's error line; the exit code to return (2: bad arguments or environment)."""
    print(f"kprobe: error: {msg}", file=sys.stderr)
    return code


class Failed(Exception):
    """A command cannot go on, from deep inside it: ``main`` prints it with :func:`die` and exits ``code``."""

    def __init__(self, msg: str, code: int = 2) -> None:
        super().__init__(msg)
        self.code = code


def default_data() -> Path:
    """The data directory when --data is not given: $KPROBE_DATA, else /var/lib/kprobe."""
    return Path(os.environ.get("KPROBE_DATA", "/var/lib/kprobe"))


def add_data_arg(p: argparse.ArgumentParser, what: str = "data directory") -> None:
    p.add_argument("--data", type=Path, default=default_data(), help=f"{what} (default: %(default)s)")


@contextmanager
def store_at(data: Path, write: bool = False) -> Iterator[Any]:  # -> RemoteStore | ChdbStore | KafkaOnlyStore
    """The recording under ``data``: the running recorder's socket, else the store opened here; closed
    on the way out. No recording there (or one locked by another process) is :class:`Failed`;
    a QueryError from a query goes to the caller, who says what failed. ``write``: the recorder's write
    socket (its read socket runs every query read-only)."""
    from kprobe.query.client import QueryError, open_store  # lazy: http.client is ~25 ms of `kprobe --help`

    try:
        store = open_store(data, write)
    except QueryError as e:
        raise Failed(str(e)) from None
    try:
        yield store
    finally:
        store.close()
