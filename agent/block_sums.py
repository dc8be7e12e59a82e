"""The kernel's sums of fast block requests, read out as block_io records.

blockio.bpf.c adds every request faster than ``min_block_us`` to a per-CPU sum keyed by
submitter, device, operation and generation (``kp_config.block_epoch``), instead of sending
a row each: a database host completes thousands of sub-millisecond requests a second, and a
row each was most of what the recorder stored. Each tick this reader retires the current
generation (the probes start adding to the next one) and reads, then deletes, the
generation retired at the previous tick: by then no program is still adding to it, so a
sum is never read half-written or deleted under a writer. A sum becomes one block_io
record with ``requests`` > 1 (or 1), its ts..end_ts spanning the requests it holds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kprobe.agent.libbpf import BpfMap
from kprobe.schemas import layouts as L

EPOCHS = 2


@dataclass
class BlockSums:
    sums: BpfMap
    ncpu: int
    set_epoch: Callable[[int], None]  # writes kp_config.block_epoch
    epoch: int = 0
    requests_read: int = 0

    def tick(self, everything: bool = False) -> np.ndarray:
        """Retire the current generation; return the retired ones as block_io records.

        ``everything`` (at stop) also reads the generation just retired: the probes are
        about to be detached, so a request completing now is the only one that could race.
        """
        # the generation retired at the previous tick: no program has added to it since
        keys = self._keys()
        done = self._read([k for k in keys if int(k["epoch"]) != self.epoch])
        retired, self.epoch = self.epoch, (self.epoch + 1) % EPOCHS
        self.set_epoch(self.epoch)
        if not everything:
            return done
        rest = self._read([k for k in self._keys() if int(k["epoch"]) == retired])
        return np.concatenate([done, rest])

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
            r = out[n]
            r["issue_ns"] = used["issue_ns"].min()
            r["done_ns"] = last["done_ns"]
            r["sector"] = used[int(np.argmin(used["issue_ns"]))]["sector"]
            for f in ("bytes", "busy_ns", "requests"):
                r[f] = used[f].sum()
            r["max_ns"] = used["max_ns"].max()
            for f in ("dev", "tgid", "tid", "rwbs", "comm"):
                r[f] = last[f]
            n += 1
        self.requests_read += int(out["requests"][:n].sum())
        return out[:n]
