"""Drain a BPF ring buffer whose records have different lengths (payload capture).

Why not :class:`~kprobe.agent.ringbuf.RingReader`: that reader sees a backlog as a strided numpy
array, which needs every record to have the same size. A payload record carries only the bytes a
call moved (a ~100-byte PostgreSQL message should not take a 4 KiB slot), so the records must be
walked one header at a time. The walk happens on one copy of the backlog: the committed span is
copied out of the mapping in one go (the kernel maps the data area twice, so a span that wraps is
contiguous), record boundaries are found in that copy, and the consumer position is advanced past
the last committed record only after the copy. The caller parses the records where they lie in
the copy, without a copy per record.

Same mapping and header rules as :mod:`.ringbuf` (kernel/bpf/ringbuf.c): an 8-byte header per
record (``len`` with BUSY/DISCARD bits, page offset), records 8-byte aligned; a BUSY record (reserved,
not yet committed) ends the drain, and the records after it wait for the next one.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field

from .ringbuf import _POS, BUSY_BIT, DISCARD_BIT, LEN_MASK, map_ring

__all__ = ["VarRingReader"]

_BUSY, _DISCARD, _LEN_MASK = int(BUSY_BIT), int(DISCARD_BIT), int(LEN_MASK)   # plain ints for the header walk
_U32 = struct.Struct("<I")


@dataclass
class VarRingReader:
    map_fd: int
    size: int  #: data area bytes (the map's max_entries), a power of two
    name: str = ""
    discarded: int = field(default=0, init=False)  #: records the producer discarded (none in payload capture)

    def __post_init__(self) -> None:
        self._page = mmap.PAGESIZE
        self._cons_mm, self._prod_mm = map_ring(self.map_fd, self.size)
        self._mask = self.size - 1

    def pending_bytes(self) -> int:
        """Bytes the producer has written that the consumer has not taken yet (how full the ring is)."""
        return _POS.unpack_from(self._prod_mm, 0)[0] - _POS.unpack_from(self._cons_mm, 0)[0]

    def drain(self) -> tuple[bytes, list[tuple[int, int]]]:
        """The committed records up to the producer position seen now: one copy of the span and
        ``(offset, length)`` of each record's body in it. The producer position is sampled once
        (chasing it costs more than leaving new records for the next tick)."""
        cons = _POS.unpack_from(self._cons_mm, 0)[0]
        prod = _POS.unpack_from(self._prod_mm, 0)[0]
        span = min(prod - cons, self.size)
        if span <= 0:
            return b"", []
        start = self._page + (cons & self._mask)
        buf = self._prod_mm[start : start + span]
        out: list[tuple[int, int]] = []
        pos = 0
        unpack = _U32.unpack_from
        while pos + 8 <= span:
            (ln,) = unpack(buf, pos)
            if ln & _BUSY:
                break
            size = ln & _LEN_MASK
            if ln & _DISCARD:
                self.discarded += 1
            else:
                out.append((pos + 8, size))
            pos += (size + 15) & ~7  # 8-byte header + body, rounded up to 8
        pos = min(pos, span)
        if pos:
            struct.pack_into("<Q", self._cons_mm, 0, cons + pos)
        return buf, out

    def close(self) -> None:
        for mm in (self._cons_mm, self._prod_mm):
            try:
                mm.close()
            except BufferError:
                pass
