"""Realistic non-card data is not masked (issue 18: a replay log of a journal service had 12
timestamp+hex-id runs masked as cards). Luhn alone passes one number in ten; with the issuer
ranges, scheme lengths, and the shape rules for long runs, none of these should be.

The one shape left on purpose: four groups of 3-6 digits written like a card (``3539 6253 3242
5337``) that pass range + Luhn are masked, because that is exactly how a card is written.
"""

from __future__ import annotations

import random
import uuid

import pytest

from kprobe.masking import mask_same_length, mask_text

RND = random.Random(1765098312)
N = 3000


def _hex(n: int) -> str:
    return "".join(RND.choice("0123456789abcdef") for _ in range(n))


def _ts_us() -> str:
    return str(RND.randrange(1_600_000_000_000_000, 1_900_000_000_000_000))


def _ts_ns() -> str:
    return str(RND.randrange(1_600_000_000_000_000_000, 1_900_000_000_000_000_000))


def _isin() -> str:
    return RND.choice(("US", "GB", "DE", "FR")) + "".join(RND.choice("0123456789") for _ in range(10))


SHAPES = {
    "timestamp+hex id": lambda: _ts_us() + _hex(RND.choice((8, 16, 24, 32))),
    "ns timestamp+hex id": lambda: _ts_ns() + _hex(RND.choice((8, 16, 24, 32))),
    "timestamp-hex id": lambda: f"{_ts_us()}-{_hex(16)}",
    "ns timestamp": _ts_ns,
    "uuid": lambda: str(uuid.UUID(int=RND.getrandbits(128))),
    "trace id": lambda: _hex(32),
    "journal line": lambda: (f"{_ts_ns()} seq={RND.randrange(10**12)} id={_ts_us()}{_hex(12)} "
                             f"isin={_isin()} amt={RND.randrange(10**7)}.{RND.randrange(100):02d}"),
    "ISO date time": lambda: f"2026-{RND.randrange(1, 13):02d}-{RND.randrange(1, 29):02d}T"
                             f"{RND.randrange(24):02d}:{RND.randrange(60):02d}:{RND.randrange(60):02d}.{RND.randrange(10**6):06d}Z",
    "ISIN": _isin,
    "20-digit order id": lambda: str(RND.randrange(10**19, 10**20)),
    "IPs and ports": lambda: f"10.{RND.randrange(256)}.{RND.randrange(256)}.{RND.randrange(256)}:{RND.randrange(65536)} "
                             f"10.{RND.randrange(256)}.{RND.randrange(256)}.{RND.randrange(256)}",
}  # fmt: skip


@pytest.mark.parametrize("shape", SHAPES)
def test_no_false_positives_on_realistic_ids(shape: str) -> None:
    values = [SHAPES[shape]() for _ in range(N)]
    masked = [v for v in values if mask_text(v)[1] or mask_same_length(v.encode())[1]]
    assert masked == [], f"{len(masked)} of {N} {shape} values masked, e.g. {masked[:3]}"


def test_the_issue_example_timestamp_followed_by_hex_is_kept() -> None:
    for text in ("1765098312345678a3f9e0c1d2b3c4d5", "1765098312345678039a3f9e0c1d", "ts=1765098312345678-9f8e7d6c"):
        assert mask_text(text) == (text, 0)
