"""The kernel's sums of fast block requests, read out as block_io records.

blockio.bpf.c adds every request faster than ``min_block_us`` to a per-CPU sum keyed by
submitter, device, operation and generation (``kp_runtime.block_epoch``), instead of sending
a row each: a database host completes thousands of sub-millisecond requests a second, and a
row each was most of what the recorder stored. Each tick (a second, and before any flush a
query asks for) retires the current generation, so the probes add to the other one, waits until
no program is still adding to the retired one (the probes count themselves in and out per
generation, ``block_writers``), then reads and deletes its sums: a sum is never read
half-written or deleted under a writer. A fixed pause is not enough: on a VM the CPU running a
program can be descheduled by the hypervisor for milliseconds mid-program. A generation whose
writers do not finish within ``WAIT_S`` is left for a later tick (counted, never lost). A sum
becomes one block_io record with ``requests`` > 1 (or 1), its ts..end_ts spanning the requests it holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kprobe.agent.libbpf import BpfMap
from kprobe.schemas import layouts as L

EPOCHS = L.KP_BLOCK_EPOCHS
POLL_S = 0.0002
WAIT_S = 0.2


@dataclass
class BlockSums:
    sums: BpfMap
    writers: BpfMap  # per CPU, per generation: programs adding to it now
    ncpu: int
    set_epoch: Callable[[int], None]  # writes kp_runtime.block_epoch
    epoch: int = 0
    requests_read: int = 0
    deferred: int = 0  #: ticks whose retired generation still had a writer after WAIT_S (read later)

    def tick(self) -> np.ndarray:
        """Retire the current generation and return every retired one as block_io records."""
        old = self.epoch
        self.epoch = (self.epoch + 1) % EPOCHS
        self.set_epoch(self.epoch)
        if not self._writers_done(old):
            self.deferred += 1   # its sums stay in the map: read when it is retired and quiet
            return np.empty(0, dtype=L.KP_BLOCK_IO)
        return self._read([k for k in self._keys() if int(k["epoch"]) == old])

    def _writers_done(self, epoch: int) -> bool:
        """Wait until no program adds to ``epoch`` (the sum over CPUs of its writers is 0)."""
        key = np.array([epoch], dtype=np.uint32)
        count = np.zeros(self.ncpu, dtype=np.int64)
        deadline = time.monotonic() + WAIT_S
        while True:
            time.sleep(POLL_S)   # a syscall's barriers between the flip above and the read below
            if self.writers.lookup(key, count) and int(count.sum()) == 0:
                return True
            if time.monotonic() > deadline:
                return False

    def _keys(self) -> list[np.void]:
        nxt = self.sums.lib.lib.bpf_map_get_next_key
        cur, prev = np.zeros(1, dtype=L.KP_BLOCK_KEY), None
        out = []
        for _ in range(self.sums.max_entries + 1):
            if nxt(self.sums.fd, None if prev is None else prev.ctypes.data, cur.ctypes.data) != 0:
                break
            out.append(cur[0].copy())
            prev = cur.copy()
        return out

    def _read(self, keys: list[np.void]) -> np.ndarray:
        out = np.zeros(len(keys), dtype=L.KP_BLOCK_IO)
        per_cpu = np.zeros(self.ncpu, dtype=L.KP_BLOCK_IO)
        n = 0
        for k in keys:
            key = np.array([k], dtype=L.KP_BLOCK_KEY)
            per_cpu[:] = 0
            if not self.sums.lookup(key, per_cpu):
                continue
            self.sums.delete(key)
            used = per_cpu[per_cpu["requests"] > 0]
            if not len(used):
                continue
            last = used[int(np.argmax(used["done_ns"]))]
            named = used[used["comm"] != b""]
            r = out[n]
            r["issue_ns"] = used["issue_ns"].min()
            r["done_ns"] = last["done_ns"]
            r["sector"] = used[int(np.argmin(used["issue_ns"]))]["sector"]
            for f in ("bytes", "busy_ns", "requests"):
                r[f] = used[f].sum()
            r["max_ns"] = used["max_ns"].max()
            # who and where come from the key; the name from a CPU's slot that has one
            r["tgid"], r["dev"], r["tid"] = k["tgid"], k["dev"], last["tid"]
            r["rwbs"] = bytes([int(k["op"])]) if 0 < int(k["op"]) < 128 else b"?"
            r["comm"] = named[-1]["comm"] if len(named) else b""
            n += 1
        self.requests_read += int(out["requests"][:n].sum())
        return out[:n]
