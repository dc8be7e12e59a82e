"""The ring drain hands out records the producer can no longer change (agent/ringbuf.py).

Found in real recordings: a few off-CPU, syscall and fd_open rows a day made of other
records' bytes (a waker tgid of ASCII, times hours ahead). A drain of exactly one record
returned a view of the ring itself: the body of one slot is already contiguous, so no copy
was made, and once the consumer position moved on, the kernel wrote the next lap over it
while the batch waited to be flushed. The ring here is a memfd laid out as the kernel's
mapping is (consumer page, producer page, data area twice), written as the kernel writes it.
"""

from __future__ import annotations

import mmap
import os
import struct

import numpy as np

from kprobe.agent.ringbuf import BUSY_BIT, RingReader

RECORD = np.dtype([("ts_ns", "<u8"), ("tgid", "<u4"), ("tid", "<u4"), ("comm", "S16")])
SIZE = 4096          # data area: a page, so 4096 // 40 slots and a lap that does not fall on a slot


class FakeKernelRing:
    """Producer side of a BPF ring buffer over a memfd: headers, producer position, double-mapped data."""

    def __init__(self) -> None:
        page = mmap.PAGESIZE
        self.fd = os.memfd_create("ring")
        os.ftruncate(self.fd, 2 * page + 2 * SIZE)
        self.mm = mmap.mmap(self.fd, 2 * page + 2 * SIZE)
        self.page = page
        self.slot = 8 + (RECORD.itemsize + 7) // 8 * 8

    def pos(self, which: int) -> int:
        return struct.unpack_from("<Q", self.mm, which * self.page)[0]

    def produce(self, rec: np.ndarray, busy: bool = False) -> None:
        prod = self.pos(1)
        at = prod % SIZE
        hdr = struct.pack("<II", RECORD.itemsize | (int(BUSY_BIT) if busy else 0), 0)
        body = hdr + rec.tobytes().ljust(self.slot - 8, b"\0")
        for base in (2 * self.page + at, 2 * self.page + SIZE + at):     # the data area, mapped twice
            end = min(base + len(body), 2 * self.page + 2 * SIZE)
            self.mm[base:end] = body[: end - base]
        wrap = at + len(body) - SIZE          # the second mapping's tail is the first one's head
        if wrap > 0:
            self.mm[2 * self.page : 2 * self.page + wrap] = body[len(body) - wrap :]
        struct.pack_into("<Q", self.mm, self.page, prod + self.slot)

    def close(self) -> None:
        self.mm.close()
        os.close(self.fd)


def _rec(i: int) -> np.ndarray:
    r = np.zeros(1, dtype=RECORD)
    r["ts_ns"], r["tgid"], r["tid"], r["comm"] = 1_000 + i, 100 + i, 200 + i, b"QueryCompPipeEx"
    return r


def test_a_drained_record_does_not_change_when_the_producer_laps_the_ring() -> None:
    ring = FakeKernelRing()
    reader = RingReader(ring.fd, SIZE, RECORD, "test")
    try:
        for n_drained in (1, 2, 5):
            for i in range(n_drained):
                ring.produce(_rec(i))
            got = reader.drain()
            want = got.copy()
            assert len(got) == n_drained and got["tgid"].tolist() == [100 + i for i in range(n_drained)]
            # a whole lap of newer records while the batch waits for its flush
            for i in range(SIZE // ring.slot + 3):
                ring.produce(_rec(1000 + i))
                reader.drain()
            assert got.tobytes() == want.tobytes(), (n_drained, got, want)
    finally:
        reader.close()
        ring.close()


def test_a_reserved_record_not_yet_committed_stops_the_drain_there() -> None:
    ring = FakeKernelRing()
    reader = RingReader(ring.fd, SIZE, RECORD, "test")
    try:
        ring.produce(_rec(1))
        ring.produce(_rec(2), busy=True)
        ring.produce(_rec(3))
        got = reader.drain()
        assert got["tgid"].tolist() == [101]
        assert reader.pending_bytes() == 2 * ring.slot
    finally:
        reader.close()
        ring.close()
