"""Vectorised string/address decoding must equal the obvious per-row answer."""

from __future__ import annotations

import ipaddress

import numpy as np

from kprobe.schemas.tables import decode_str, format_addr


def test_decode_str_matches_per_row_decoding():
    rng = np.random.default_rng(1)
    names = [b"python3", b"batch-job", b"settlement-svc", b"", b"x" * 15, "zé".encode()]
    raw = np.array([names[i] for i in rng.integers(0, len(names), 5000)], dtype="S16")
    got = decode_str(raw)
    assert list(got) == [r.decode("utf-8", "replace") for r in raw.tolist()]


def test_decode_str_is_exact_when_two_names_share_a_hash():
    """Rows are grouped by a 64-bit hash of their words; two names built to collide must still
    decode as themselves (the collision is detected and the exact path taken)."""
    mult = 0x9E3779B97F4A7C15
    mask = (1 << 64) - 1
    a0, a1 = int.from_bytes(b"settleme", "little"), int.from_bytes(b"nt-svc\0\0", "little")
    b0 = int.from_bytes(b"batch-jo", "little")
    b1 = a1 ^ ((a0 * mult) & mask) ^ ((b0 * mult) & mask)  # same hash: ((0 ^ w0) * m ^ w1) * m
    a, b = (w0.to_bytes(8, "little") + w1.to_bytes(8, "little") for w0, w1 in ((a0, a1), (b0, b1)))
    raw = np.array([a, b, a, b, b], dtype="S16")
    got = decode_str(raw)
    assert list(got) == [r.decode("utf-8", "replace") for r in raw.tolist()]
    assert got[0] != got[1]


def test_format_addr_matches_ipaddress_for_v4_and_v6():
    rng = np.random.default_rng(2)
    raw = np.zeros((3000, 16), dtype=np.uint8)
    fam = np.where(rng.random(3000) < 0.5, 2, 10).astype(np.uint16)
    pool = rng.integers(0, 256, (7, 16), dtype=np.uint8)
    raw[:] = pool[rng.integers(0, 7, 3000)]
    got = format_addr(raw, fam)
    want = [str(ipaddress.IPv4Address(bytes(r[:4]))) if f == 2 else str(ipaddress.IPv6Address(bytes(r)))
            for r, f in zip(raw, fam, strict=True)]
    assert list(got) == want
