"""Card numbers never reach a replay log.

A replay log holds the bytes the kernel handed a payment process: requests, card numbers.
Those bytes are masked (BIN + last 4, same rule as spans) before they are written, without
moving any byte, so a replay still hands the process exactly as many bytes as the kernel
did. The replay engine masks what the replayed process writes the same way before comparing,
so a process that echoes a card number still replays identically. What this costs: a replayed
process sees ``*`` where hidden digits were, so logic that computes on the full number (a Luhn
check, a hash of the PAN) diverges, and that divergence is reported like any other.

A card number may straddle two 2 KiB chunks of one syscall, so chunks are masked per payload
(tid, seq, region), and a payload whose last chunk is full is held back until the next drain.
"""

from __future__ import annotations

import numpy as np

from kprobe.otel.redact import redact_bytes_same_length
from kprobe.schemas import layouts as L

_DIGITS_TO_ZERO = bytes(0x30 if 0x30 <= b <= 0x39 else 0x78 for b in range(256))
_CANDIDATE = b"0" * 13


def maybe_holds_pan(recs: np.ndarray) -> bool:
    """Cheap whole-batch test: False guarantees no chunk (nor two glued chunks) holds a 13-digit run."""
    return _CANDIDATE in recs["data"].tobytes().translate(_DIGITS_TO_ZERO, b" -")


def split_incomplete(recs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ready, held): the last payload of the batch is held when its last chunk is full (more may follow)."""
    if not recs.size or int(recs["len"][-1]) < L.KP_RDATA_LEN:
        return recs, recs[:0]
    last = recs[-1]
    same = ((recs["tid"] == last["tid"]) & (recs["seq"] == last["seq"]) & (recs["region"] == last["region"]))
    start = len(recs)
    while start > 0 and same[start - 1]:
        start -= 1
    return recs[:start], recs[start:]


def mask_chunks(recs: np.ndarray) -> int:
    """Mask card numbers in place across the chunks of each payload; returns the number masked."""
    if not recs.size or not maybe_holds_pan(recs):
        return 0
    masked = 0
    keys = np.stack([recs["tid"].astype(np.uint64), recs["seq"], recs["region"].astype(np.uint64)])
    order = np.lexsort((recs["offset"], keys[2], keys[1], keys[0]))
    i = 0
    while i < len(order):
        j = i + 1
        while j < len(order) and all(keys[k][order[j]] == keys[k][order[i]] for k in range(3)):
            j += 1
        idx = order[i:j]
        lens = [int(recs["len"][x]) for x in idx]
        payload = b"".join(recs["data"][x].tobytes()[:n] for x, n in zip(idx, lens, strict=True))
        out, n = redact_bytes_same_length(payload)
        if n:
            masked += n
            pos = 0
            for x, ln in zip(idx, lens, strict=True):
                buf = np.frombuffer(out[pos:pos + ln], dtype=np.uint8)
                recs["data"][x][:ln] = buf
                pos += ln
        i = j
    return masked
