"""Replay logs never hold a card number, and masking never moves a byte."""

import numpy as np

from kprobe.replay.redact import mask_chunks, split_incomplete
from kprobe.schemas import layouts as L

PAN = b"4111 1111 1111 1111"
N = L.KP_RDATA_LEN


def _chunks(payload: bytes, tid: int = 7, seq: int = 3, region: int = 0) -> np.ndarray:
    parts = [payload[i:i + N] for i in range(0, len(payload), N)]
    recs = np.zeros(len(parts), dtype=L.KP_RDATA)
    for i, p in enumerate(parts):
        recs[i]["tid"], recs[i]["seq"], recs[i]["region"] = tid, seq, region
        recs[i]["offset"], recs[i]["len"] = i * N, len(p)
        recs[i]["data"][: len(p)] = np.frombuffer(p, dtype=np.uint8)
    return recs


def _payload(recs: np.ndarray) -> bytes:
    return b"".join(r["data"].tobytes()[: int(r["len"])] for r in recs)


def test_card_number_straddling_two_chunks_is_masked_in_place():
    before = b"x" * (N - 8) + b"pan=" + PAN + b";cvv=123 amount=1795000000000000000"
    recs = _chunks(before)
    assert len(recs) == 2 and PAN not in recs["data"][0].tobytes() and PAN not in recs["data"][1].tobytes()
    assert mask_chunks(recs) == 1
    after = _payload(recs)
    assert len(after) == len(before)
    assert b"4111 11** **** 1111" in after and PAN not in after
    assert after.replace(b"4111 11** **** 1111", PAN) == before   # nothing else moved or changed


def test_payloads_without_card_numbers_are_untouched():
    before = b"ledger 2026-11-27T02:24:27Z amount=12.50 ts=1795000000000000000\n" * 50
    recs = _chunks(before)
    assert mask_chunks(recs) == 0
    assert _payload(recs) == before


def test_a_payload_whose_last_chunk_is_full_waits_for_the_next_drain():
    first = _chunks(b"a" * 100, seq=1)
    open_ended = _chunks(b"b" * (2 * N), seq=2)          # may continue in the next drain
    ready, held = split_incomplete(np.concatenate([first, open_ended]))
    assert list(ready["seq"]) == [1] and list(held["seq"]) == [2, 2]
    ready, held = split_incomplete(first)
    assert len(ready) == 1 and len(held) == 0
