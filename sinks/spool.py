"""Bounded on-disk queue of encoded Kafka messages, for when the brokers cannot be reached.

One file per message, named ``<run start ns>-<seq>.kpb`` so a directory listing sorted by name is
the order the agent produced them (older runs first: a restarted agent drains what its previous
run left before anything new). A file is written to a temporary name, fsynced, renamed and the
directory fsynced, so neither a crash nor a power cut leaves a half message under a ``.kpb`` name.
The byte bound is checked before writing; a message that does not fit is refused and the caller
counts it as dropped (reason ``spool_full``); a write the disk refuses (ENOSPC, EIO, ...) is
refused the same way (reason ``spool_io_error``), never an exception in the agent's write path.

A file that cannot be a message (empty, truncated, a checksum that does not match, a topic name
that is not UTF-8) is moved to ``quarantine/`` and counted (``quarantined``), at start-up and when
the drain thread meets it: one bad file neither stops the agent nor the drain, and it stays on disk
for a post-mortem instead of being deleted or sent.

File format (little endian): ``KPS1``, topic length u16, key length u16, rows u32, payload length
u32, CRC-32 of topic+key+payload u32, then topic, key, payload. Files of the earlier format (no
magic, no length, no checksum: ``<HHI`` then topic, key, payload) are still read.
"""

from __future__ import annotations

import errno
import os
import struct
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path

MAGIC = b"KPS1"
_HEAD = struct.Struct("<4sHHIII")  # magic, topic length, key length, rows, payload length, crc32
_LEGACY = struct.Struct("<HHI")  # topic length, key length, rows
QUARANTINE = "quarantine"
MAX_ROWS = 1 << 31  # a header claiming more rows than this is not one of ours


class CorruptSpoolFile(ValueError):
    """A spool file that is not a whole message."""


@dataclass(frozen=True)
class Spooled:
    path: Path
    topic: str
    key: bytes
    rows: int
    payload: bytes


def encode(topic: str, key: bytes, rows: int, payload: bytes) -> bytes:
    t = topic.encode()
    crc = zlib.crc32(payload, zlib.crc32(key, zlib.crc32(t)))
    return _HEAD.pack(MAGIC, len(t), len(key), rows, len(payload), crc) + t + key + payload


def decode(path: Path, blob: bytes) -> Spooled:
    """One file's message, or CorruptSpoolFile saying what is wrong with it (never another error)."""
    if blob[:4] == MAGIC:
        if len(blob) < _HEAD.size:
            raise CorruptSpoolFile(f"{path.name}: {len(blob)} bytes, shorter than the header")
        _, tl, kl, rows, pl, crc = _HEAD.unpack_from(blob)
        o = _HEAD.size
        if len(blob) != o + tl + kl + pl:
            raise CorruptSpoolFile(f"{path.name}: {len(blob)} bytes, the header says {o + tl + kl + pl} (truncated?)")
        t, key, payload = blob[o:o + tl], blob[o + tl:o + tl + kl], blob[o + tl + kl:]
        if zlib.crc32(payload, zlib.crc32(key, zlib.crc32(t))) != crc:
            raise CorruptSpoolFile(f"{path.name}: checksum mismatch")
    else:
        if len(blob) < _LEGACY.size:
            raise CorruptSpoolFile(f"{path.name}: {len(blob)} bytes, shorter than a header")
        tl, kl, rows = _LEGACY.unpack_from(blob)
        o = _LEGACY.size
        if len(blob) <= o + tl + kl:
            raise CorruptSpoolFile(f"{path.name}: no payload after a {tl}-byte topic and a {kl}-byte key (truncated?)")
        t, key, payload = blob[o:o + tl], blob[o + tl:o + tl + kl], blob[o + tl + kl:]
    if rows > MAX_ROWS:
        raise CorruptSpoolFile(f"{path.name}: {rows} rows claimed")
    try:
        topic = t.decode()
    except UnicodeDecodeError as e:
        raise CorruptSpoolFile(f"{path.name}: topic name is not UTF-8 ({e})") from None
    if not topic:
        raise CorruptSpoolFile(f"{path.name}: empty topic name")
    return Spooled(path, topic, key, rows, payload)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class DiskSpool:
    directory: Path
    max_bytes: int = 1 << 30
    bytes: int = 0
    messages: int = 0
    rows: int = 0
    quarantined: int = 0  # files moved to quarantine/ (this run)
    io_errors: int = 0  # writes the disk refused (ENOSPC, EIO, ...): the caller drops and counts the rows
    last_error: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.directory, 0o700)  # messages hold the recording: owner only
        for tmp in self.directory.glob("*.tmp"):
            tmp.unlink()
        for p in self._files():
            try:
                item = decode(p, p.read_bytes())
            except CorruptSpoolFile as e:
                self._quarantine(p, str(e))
                continue
            except OSError as e:
                self._quarantine(p, f"{p.name}: unreadable ({e})")
                continue
            self.bytes += p.stat().st_size
            self.messages += 1
            self.rows += item.rows

    def _files(self) -> list[Path]:
        return sorted(self.directory.glob("*.kpb"))

    def _quarantine(self, path: Path, why: str) -> None:
        qdir = self.directory / QUARANTINE
        try:
            qdir.mkdir(exist_ok=True, mode=0o700)
            os.replace(path, qdir / path.name)
        except FileNotFoundError:
            return  # already gone (removed by a drain that raced us): nothing to keep
        except OSError:
            try:
                path.unlink()  # cannot keep it: at least never read it again
            except OSError:
                pass
        self.quarantined += 1
        self.last_error = f"quarantined {why}"

    def put(self, name: str, topic: str, key: bytes, rows: int, payload: bytes) -> str | None:
        """Append one message durably; None when written, else the reason it was not (nothing left behind):
        ``spool_full`` (the byte bound) or ``spool_io_error`` (the disk refused the write)."""
        blob = encode(topic, key, rows, payload)
        with self._lock:
            if self.bytes + len(blob) > self.max_bytes:
                return "spool_full"
            path = self.directory / f"{name}.kpb"
            tmp = path.with_suffix(".tmp")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    view = memoryview(blob)
                    while view:
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, path)
                _fsync_dir(self.directory)
            except OSError as e:
                self.io_errors += 1
                self.last_error = f"spool write failed: {errno.errorcode.get(e.errno or 0, e.errno)} {e.strerror}"
                try:
                    tmp.unlink()
                except OSError:
                    pass
                return "spool_io_error"
            self.bytes += len(blob)
            self.messages += 1
            self.rows += rows
        return None

    def peek(self, limit: int) -> list[Spooled]:
        """The oldest ``limit`` readable messages, oldest first (not removed); bad files are quarantined."""
        out: list[Spooled] = []
        for p in self._files():
            if len(out) >= limit:
                break
            try:
                blob = p.read_bytes()
            except FileNotFoundError:
                continue
            except OSError as e:
                self._forget(p, f"{p.name}: unreadable ({e})")
                continue
            try:
                out.append(decode(p, blob))
            except CorruptSpoolFile as e:
                self._forget(p, str(e), len(blob))
        return out

    def _forget(self, path: Path, why: str, size: int | None = None) -> None:
        """A file counted at start-up (or put) that turned out bad: quarantine it and uncount it."""
        with self._lock:
            if size is None:
                try:
                    size = path.stat().st_size
                except OSError:
                    size = 0
            self._quarantine(path, why)
            self.bytes = max(0, self.bytes - size)
            self.messages = max(0, self.messages - 1)

    def quarantine_item(self, item: Spooled, why: str) -> None:
        """A message that read fine but can never be sent: out of the queue, kept for a post-mortem."""
        with self._lock:
            try:
                size = item.path.stat().st_size
            except OSError:
                return
            self._quarantine(item.path, why)
            self.bytes = max(0, self.bytes - size)
            self.messages = max(0, self.messages - 1)
            self.rows = max(0, self.rows - item.rows)

    def remove(self, item: Spooled) -> None:
        with self._lock:
            try:
                size = item.path.stat().st_size
                item.path.unlink()
            except FileNotFoundError:
                return
            self.bytes -= size
            self.messages -= 1
            self.rows -= item.rows

    def empty(self) -> bool:
        with self._lock:
            return self.messages == 0
