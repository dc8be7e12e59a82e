"""Drain a BPF ring buffer as numpy record arrays, with no Python call per event.

Each ring carries one record type, so every slot has the same size (8-byte
header + record rounded up to 8) and a backlog is a plain strided array.
The kernel maps the data area twice back to back, so a backlog that wraps
around the end is still contiguous in our mapping.

Layout (kernel/bpf/ringbuf.c): offset 0 is the consumer page (read-write),
offset one page is the producer page followed by the data pages, read-only.
The header's ``len`` carries BUSY (reserved, not yet committed) and DISCARD bits.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field

import numpy as np

BUSY_BIT = np.uint32(1 << 31)
DISCARD_BIT = np.uint32(1 << 30)
LEN_MASK = np.uint32((1 << 30) - 1)
_POS = struct.Struct("<Q")  # a ring position; unpacked straight from the mmap (a numpy scalar costs ~5x)


def map_ring(map_fd: int, size: int) -> tuple[mmap.mmap, mmap.mmap]:
    """The consumer page (read-write) and the producer page followed by the data area mapped twice
    (read-only) of a BPF ring buffer with ``size`` data bytes: what every reader of a ring maps."""
    page = mmap.PAGESIZE
    cons = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    prod = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
    return cons, prod


class RingLayoutError(RuntimeError):
    """A record in the ring does not have the size our layout says: drift between C and Python."""


@dataclass
class RingReader:
    map_fd: int
    size: int  # data area bytes (the map's max_entries), a power of two
    record: np.dtype
    name: str = ""
    discarded: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        page = mmap.PAGESIZE
        self.slot = 8 + (self.record.itemsize + 7) // 8 * 8
        self._cons_mm, self._prod_mm = map_ring(self.map_fd, self.size)
        self._cons = np.frombuffer(self._cons_mm, dtype="<u8", count=1)
        self._prod = np.frombuffer(self._prod_mm, dtype="<u8", count=1)
        self._data = np.frombuffer(self._prod_mm, dtype=np.uint8, offset=page)
        self._mask = self.size - 1
        # returned by every empty drain: a quiet host polls each ring ~50 times a second
        self._empty = np.empty(0, dtype=self.record)

    def pending_bytes(self) -> int:
        return _POS.unpack_from(self._prod_mm, 0)[0] - _POS.unpack_from(self._cons_mm, 0)[0]

    def drain(self, max_records: int = 1 << 20, out: np.ndarray | None = None) -> np.ndarray:
        """Copy out committed records up to the producer position seen now.

        The producer position is sampled once: chasing it in a loop costs far
        more than leaving new records for the next tick. ``out`` (records of this
        layout) is an optional reusable buffer: on big backlogs, first-touch page
        faults of a fresh allocation cost more than the copy itself.
        """
        if out is not None:
            max_records = min(max_records, len(out))
        cons = _POS.unpack_from(self._cons_mm, 0)[0]
        prod = _POS.unpack_from(self._prod_mm, 0)[0]
        n = min((prod - cons) // self.slot, max_records, self.size // self.slot)
        if n <= 0:
            return self._empty
        start = cons & self._mask
        raw = self._data[start : start + n * self.slot].reshape(n, self.slot)
        lens = raw[:, :4].view("<u4")[:, 0]
        busy = (lens & BUSY_BIT) != 0
        if busy.any():
            n = int(np.argmax(busy))
            raw, lens = raw[:n], lens[:n]
        if n == 0:
            return self._empty
        # Copy the record bytes row by row (a strided uint8 copy is a memcpy per row;
        # copying a nested structured view field by field is several times slower).
        body = raw[:, 8 : 8 + self.record.itemsize]
        discard = (lens & DISCARD_BIT) != 0
        if discard.any():
            keep = ~discard
            self.discarded += int(discard.sum())
            body, lens = body[keep], lens[keep]
        if out is not None:
            dst = out[: len(body)].view(np.uint8).reshape(len(body), self.record.itemsize)
            dst[:] = body
            recs = out[: len(body)]
        else:
            # always a copy: one row of the ring is already contiguous, and ascontiguousarray would hand
            # back a view of ring memory the producer overwrites once the consumer position moves on
            recs = body.copy().view(self.record)[:, 0]
        if lens.size and (lens[0] & LEN_MASK) != self.record.itemsize:
            raise RingLayoutError(
                f"ring {self.name}: record length {int(lens[0] & LEN_MASK)} != layout {self.record.itemsize}"
            )
        self._cons[0] = cons + n * self.slot
        return recs

    def close(self) -> None:
        # numpy views hold buffer exports; drop them before closing the maps
        self._cons = self._prod = self._data = None  # type: ignore[assignment]
        for mm in (self._cons_mm, self._prod_mm):
            try:
                mm.close()
            except BufferError:
                pass
