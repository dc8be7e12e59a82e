"""Bounded on-disk queue of encoded Kafka messages, for when the brokers cannot be reached.

One file per message, named ``<run start ns>-<seq>.kpb`` so a directory listing sorted by name is
the order the agent produced them (older runs first: a restarted agent drains what its previous
run left before anything new). A file is written to a temporary name and renamed, so a crash
never leaves a half message that would be sent. The byte bound is checked before writing; a
message that does not fit is refused and the caller counts it as dropped (reason ``spool_full``).
"""

from __future__ import annotations

import os
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path

_HEAD = struct.Struct("<HHI")  # topic length, key length, rows


@dataclass(frozen=True)
class Spooled:
    path: Path
    topic: str
    key: bytes
    rows: int
    payload: bytes


@dataclass
class DiskSpool:
    directory: Path
    max_bytes: int = 1 << 30
    bytes: int = 0
    messages: int = 0
    rows: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for tmp in self.directory.glob("*.tmp"):
            tmp.unlink()
        for p in self._files():
            self.bytes += p.stat().st_size
            self.messages += 1
            with p.open("rb") as f:
                self.rows += _HEAD.unpack(f.read(_HEAD.size))[2]

    def _files(self) -> list[Path]:
        return sorted(self.directory.glob("*.kpb"))

    def put(self, name: str, topic: str, key: bytes, rows: int, payload: bytes) -> bool:
        """Append one message; False (nothing written) when it would exceed the bound."""
        t = topic.encode()
        blob = _HEAD.pack(len(t), len(key), rows) + t + key + payload
        with self._lock:
            if self.bytes + len(blob) > self.max_bytes:
                return False
            path = self.directory / f"{name}.kpb"
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(blob)
            os.replace(tmp, path)
            self.bytes += len(blob)
            self.messages += 1
            self.rows += rows
        return True

    def peek(self, limit: int) -> list[Spooled]:
        """The oldest ``limit`` messages, oldest first (not removed)."""
        out = []
        for p in self._files()[:limit]:
            blob = p.read_bytes()
            tl, kl, rows = _HEAD.unpack_from(blob)
            o = _HEAD.size
            out.append(Spooled(p, blob[o:o + tl].decode(), blob[o + tl:o + tl + kl], rows, blob[o + tl + kl:]))
        return out

    def remove(self, item: Spooled) -> None:
        with self._lock:
            size = item.path.stat().st_size
            item.path.unlink()
            self.bytes -= size
            self.messages -= 1
            self.rows -= item.rows

    def empty(self) -> bool:
        with self._lock:
            return self.messages == 0
