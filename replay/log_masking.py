"""Card data never reaches a replay log.

A replay log holds the bytes the kernel handed a payment process and the bytes it wrote:
requests, card numbers, CVVs. They are masked with :mod:`kprobe.masking` (same rules as spans)
before they are written, without moving any byte, so a replay still hands the process exactly
as many bytes as the kernel did. What this costs: a replayed process sees ``*`` where hidden
digits were, so logic that computes on the full number (a Luhn check, a hash of the PAN)
diverges, and that divergence is reported like any other.

Why per stream and not per syscall: a process reading ``4111 1111`` then ``1111 1111`` from one
socket received a whole card number, in two syscalls (issue 18 found it stored whole). So the
main buffer (region 0) of every read and write is appended to the stream of its process, fd
and direction, and masked by a :class:`~kprobe.masking.StreamMasker`, which holds back a
bounded tail; the chunk records holding that tail wait in memory until more of the stream, a
``close`` of the fd, or the end of the recording decides them. Chunks are written in a different
order than they were drained; the log reader keys them by (tid, seq), so order does not matter.

A chunk is matched to its syscall record (kp_rsys: which fd, read or write) by (tid, seq). The
probe emits a syscall's chunks before its record and the capture drains the record ring first,
so a syscall's chunks are always drained no later than its record: chunks whose record is not
there yet wait for the next drain. Everything else (addresses, msghdr, control data, getdents,
readlink, chunks whose record was lost) is masked payload by payload.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from kprobe.masking import StreamMasker, mask_same_length, may_need_masking
from kprobe.replay.syscall_sets import READS, WRITES
from kprobe.schemas import layouts as L
from kprobe.schemas import syscall_table as ST

__all__ = ["ReplayMasker", "STREAM_READS", "STREAM_WRITES", "matches_logged", "overlay_logged"]

# fd-based syscalls whose region 0 is the stream's data (replay/syscall_sets.py's READS and WRITES; a
# directory listing is no stream)
STREAM_READS = frozenset(READS) - {ST.nr("getdents64")}
STREAM_WRITES = frozenset(WRITES)
NR_CLOSE = ST.nr("close")

StreamKey = tuple[int, int, str]  # (tgid, fd, "r" | "w")


class _Sys(NamedTuple):
    tid: int
    seq: int
    tgid: int
    nr: int
    fd: int
    ret: int


_DATA_AT = L.KP_RDATA.fields["data"][1]
_ITEM = L.KP_RDATA.itemsize


class _Chunk:
    """One kp_rdata record as bytes (no numpy per record: a drain can hold tens of thousands)."""

    __slots__ = ("rec", "tid", "seq", "region", "offset", "len")

    def __init__(self, rec: bytearray, tid: int, seq: int, region: int, offset: int, length: int) -> None:
        self.rec, self.tid, self.seq, self.region, self.offset, self.len = rec, tid, seq, region, offset, length

    @property
    def data(self) -> bytes:
        return bytes(self.rec[_DATA_AT : _DATA_AT + self.len])

    def put(self, data: bytes) -> None:
        self.rec[_DATA_AT : _DATA_AT + len(data)] = data


def _records(chunks: list[_Chunk]) -> np.ndarray:
    return np.frombuffer(b"".join(c.rec for c in chunks), dtype=L.KP_RDATA)


@dataclass
class _Stream:
    masker: StreamMasker = field(default_factory=StreamMasker)
    chunks: deque[_Chunk] = field(default_factory=deque)  # bytes not all final yet
    incoming: bytearray = field(default_factory=bytearray)  # fed at the end of the drain
    released: bytearray = field(default_factory=bytearray)  # final bytes not yet copied into chunks


@dataclass
class ReplayMasker:
    """Masks kp_rdata chunks per stream; call :meth:`add_sys` then :meth:`add_data` each drain."""

    masked: int = 0  #: PANs, track data and sensitive values masked (all streams and payloads)
    _sys: deque[_Sys] = field(default_factory=deque)  # syscalls whose chunks are not consumed yet
    _pending: dict[tuple[int, int], list[_Chunk]] = field(default_factory=dict)  # by (tid, seq)
    _streams: dict[StreamKey, _Stream] = field(default_factory=dict)

    @property
    def held_chunks(self) -> int:
        """Chunk records drained but not yet handed out for writing."""
        return sum(len(c) for c in self._pending.values()) + sum(len(s.chunks) for s in self._streams.values())

    def add_sys(self, rsys: np.ndarray) -> None:
        """Syscall records of this drain, in drain order (only those with data, and closes)."""
        rsys = rsys[(rsys["nchunks"] > 0) | (rsys["nr"] == NR_CLOSE)]
        if rsys.size:
            fds = (rsys["args"][:, 0] & 0xFFFFFFFF).tolist()
            cols = (rsys[n].tolist() for n in ("tid", "seq", "tgid", "nr"))
            self._sys.extend(_Sys(*row, fd, ret) for *row, fd, ret in zip(*cols, fds, rsys["ret"].tolist(),
                                                                             strict=True))

    def add_data(self, rdata: np.ndarray) -> np.ndarray:
        """Chunks of this drain -> the chunk records now ready to write (masked)."""
        pending = self._pending
        raw = rdata.tobytes()
        cols = zip(*(rdata[n].tolist() for n in ("tid", "seq", "region", "offset", "len")), strict=True)
        for i, (tid, seq, region, offset, length) in enumerate(cols):
            rec = bytearray(raw[i * _ITEM : (i + 1) * _ITEM])
            pending.setdefault((tid, seq), []).append(_Chunk(rec, tid, seq, region, offset, length))
        out: list[_Chunk] = []
        touched: dict[StreamKey, _Stream] = {}
        while self._sys:
            s = self._sys.popleft()
            if s.nr == NR_CLOSE:
                for d in "rw":
                    st = self._streams.pop((s.tgid, s.fd, d), None) if s.ret == 0 else None
                    if st is not None:
                        touched.pop((s.tgid, s.fd, d), None)
                        out.extend(self._close(st))
                continue
            chunks = pending.pop((s.tid, s.seq), [])
            direction = "r" if s.nr in STREAM_READS else "w" if s.nr in STREAM_WRITES else ""
            main = [c for c in chunks if c.region == 0] if direction else []
            if main:
                sk = (s.tgid, s.fd, direction)
                st = self._streams.setdefault(sk, _Stream())
                main.sort(key=lambda c: c.offset)
                for c in main:
                    st.chunks.append(c)
                    st.incoming += c.data
                touched[sk] = st
                chunks = [c for c in chunks if c.region != 0]
            out.extend(self._one_shot(chunks))
        for st in touched.values():
            data, st.incoming = bytes(st.incoming), bytearray()
            out.extend(self._release(st, st.masker.feed(data)))
        return _records(out)

    def finish(self) -> np.ndarray:
        """The recording ended: everything still held, masked."""
        self._sys.clear()
        out: list[_Chunk] = []
        for chunks in self._pending.values():
            out.extend(self._one_shot(chunks))
        self._pending.clear()
        for st in self._streams.values():
            out.extend(self._close(st))
        self._streams.clear()
        return _records(out)

    def _close(self, st: _Stream) -> list[_Chunk]:
        data, st.incoming = bytes(st.incoming), bytearray()
        out = self._release(st, st.masker.feed(data) + st.masker.finish())
        self.masked += st.masker.masked
        return out

    def _release(self, st: _Stream, final: bytes) -> list[_Chunk]:
        """Copy final bytes into the oldest held chunks; return the chunks now complete."""
        st.released += final
        out = []
        while st.chunks and len(st.released) >= st.chunks[0].len:
            c = st.chunks.popleft()
            c.put(bytes(st.released[: c.len]))
            del st.released[: c.len]
            out.append(c)
        return out

    def _one_shot(self, chunks: list[_Chunk]) -> list[_Chunk]:
        """Mask each (payload, region) of ``chunks`` on its own, in place."""
        regions: dict[tuple[int, int, int], list[_Chunk]] = {}
        for c in chunks:
            regions.setdefault((c.tid, c.seq, c.region), []).append(c)
        for part in regions.values():
            part.sort(key=lambda c: c.offset)
            payload = b"".join(c.data for c in part)
            if not may_need_masking(payload):
                continue
            masked, n = mask_same_length(payload)
            if n:
                self.masked += n
                pos = 0
                for c in part:
                    c.put(masked[pos : pos + c.len])
                    pos += c.len
        return chunks

    def streams_masked(self) -> int:
        """Masked so far, including streams still open (for meta.json while recording)."""
        return self.masked + sum(s.masker.masked for s in self._streams.values())


def matches_logged(actual: bytes, logged: bytes) -> bool:
    """Does a replayed write match the logged (masked) one? Where the log has ``*`` the original
    bytes are unknown (a masked digit, CVV or track byte), so any byte matches there."""
    if actual == logged:
        return True
    if len(actual) != len(logged):
        return False
    a = np.frombuffer(actual, dtype=np.uint8)
    b = np.frombuffer(logged, dtype=np.uint8)
    return bool(np.all((a == b) | (b == ord("*"))))


def overlay_logged(actual: bytes, logged: bytes) -> bytes:
    """``actual`` with the log's masked positions masked too, then masked on its own: what a
    divergence report may show (never more card data than the log holds)."""
    if len(actual) and len(logged):
        n = min(len(actual), len(logged))
        a = np.frombuffer(actual, dtype=np.uint8).copy()
        b = np.frombuffer(logged, dtype=np.uint8)[:n]
        a[:n][b == ord("*")] = ord("*")
        actual = a.tobytes()
    return mask_same_length(actual)[0]
