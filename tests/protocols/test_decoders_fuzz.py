"""Every decoder against hostile input (hypothesis, bounded time): random bytes and mutated real
conversations, split anywhere, in both directions. None may raise; what it cannot decode it counts."""

from __future__ import annotations

import struct

import iso8583
import pytest
import simplefix
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from iso8583.specs import default_ascii
from iso20022_messages import pacs002, pacs008

from kprobe.protocols import DECODERS, Direction, new_decoder

BUDGET = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _pg(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def _seed(protocol: str) -> list[tuple[Direction, bytes]]:
    """One valid conversation per protocol, built by the protocol's own generator where one exists."""
    c, s = Direction.TO_SERVER, Direction.TO_CLIENT
    if protocol == "http":
        return [(c, b"POST /p/1 HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{\"payment_id\":1}\n"),
                (s, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")]
    if protocol == "postgresql":
        startup = struct.pack("!ii", 8 + 16, 196608) + b"user\0pg\0database\0db\0\0"
        startup = struct.pack("!i", len(startup)) + startup[4:]
        return [(c, startup), (s, _pg(b"R", struct.pack("!i", 0)) + _pg(b"Z", b"I")),
                (c, _pg(b"Q", b"SELECT 1\0") + _pg(b"P", b"s1\0SELECT $1\0\0\0") + _pg(b"B", b"\0s1\0\0\0\0\1\0\0\0\1x\0\0")
                 + _pg(b"E", b"\0\0\0\0\0") + _pg(b"S", b"")),
                (s, _pg(b"T", b"\0\0") + _pg(b"D", b"\0\1\0\0\0\0011") + _pg(b"C", b"SELECT 1\0") + _pg(b"Z", b"I")
                 + _pg(b"1", b"") + _pg(b"2", b"") + _pg(b"E", b"SERROR\0C22012\0Mboom\0\0") + _pg(b"Z", b"I"))]
    if protocol == "fix":
        def m(t: str, **tags: str) -> bytes:
            x = simplefix.FixMessage()
            x.append_pair(8, "FIX.4.4", header=True)
            x.append_pair(35, t, header=True)
            x.append_pair(34, 1, header=True)
            for k, v in tags.items():
                x.append_pair(int(k[1:]), v)
            return x.encode()
        return [(c, m("A") + m("D", t11="X1", t55="EUR")), (s, m("A") + m("8", t11="X1", t150="0", t39="0", t37="O1")),
                (s, m("8", t11="X1", t150="F", t39="2", t37="O1")), (c, m("G", t11="X2", t41="X1")),
                (s, m("3", t45="1"))]
    if protocol == "iso8583":
        req, _ = iso8583.encode({"t": "0200", "2": "4111111111111111", "11": "000001", "35": "4111=2512"}, default_ascii)
        resp, _ = iso8583.encode({"t": "0210", "11": "000001", "39": "00"}, default_ascii)
        return [(c, len(req).to_bytes(2, "big") + bytes(req)), (s, len(resp).to_bytes(2, "big") + bytes(resp))]
    if protocol == "iso20022":
        return [(c, pacs008("M1", "E1", "u-1", "1.00")), (s, pacs002("R1", "M1", "E1", "u-1", "ACSC"))]
    raise AssertionError(protocol)


def _run(protocol: str, pieces: list[tuple[Direction, bytes]]) -> None:
    d = new_decoder(protocol)
    ts = 1_000
    out = []
    for direction, data in pieces:
        ts += 1_000
        out += d.feed(direction, data, ts)
    out += d.close(ts + 1)
    for e in out:
        assert e.end_ns >= e.start_ns
        assert e.name is not None
    assert all(v >= 0 for v in d.stats.as_dict().values())


@pytest.mark.parametrize("protocol", sorted(DECODERS))
def test_seed_conversations_decode_cleanly(protocol) -> None:
    d = new_decoder(protocol)
    out = []
    for i, (direction, data) in enumerate(_seed(protocol)):
        out += d.feed(direction, data, 1000 * (i + 1))
    assert out, protocol
    assert d.stats.malformed == 0 and d.stats.abandoned == 0


@pytest.mark.parametrize("protocol", sorted(DECODERS))
@BUDGET
@given(st.lists(st.tuples(st.sampled_from(list(Direction)), st.binary(max_size=300)), max_size=12))
def test_random_bytes_never_crash(protocol, pieces) -> None:
    _run(protocol, pieces)


@st.composite
def _mutated(draw, protocol: str):
    pieces = _seed(protocol)
    stream = []
    for direction, data in pieces:
        b = bytearray(data)
        for _ in range(draw(st.integers(0, 4))):
            op = draw(st.sampled_from(["flip", "cut", "insert", "dup"]))
            if not b:
                break
            i = draw(st.integers(0, len(b) - 1))
            if op == "flip":
                b[i] = draw(st.integers(0, 255))
            elif op == "cut":
                del b[i : i + draw(st.integers(1, 20))]
            elif op == "insert":
                b[i:i] = draw(st.binary(min_size=1, max_size=20))
            else:
                b[i:i] = b[i : i + draw(st.integers(1, 40))]
        cuts = sorted(draw(st.lists(st.integers(0, max(0, len(b))), max_size=6)))
        last = 0
        for cut in [*cuts, len(b)]:
            stream.append((direction, bytes(b[last:cut])))
            last = cut
    return stream


@pytest.mark.parametrize("protocol", sorted(DECODERS))
def test_mutated_conversations_never_crash(protocol) -> None:
    @BUDGET
    @given(_mutated(protocol))
    def run(pieces) -> None:
        _run(protocol, pieces)

    run()


@pytest.mark.parametrize("protocol", sorted(DECODERS))
def test_garbage_is_counted(protocol) -> None:
    d = new_decoder(protocol)
    junk = bytes(range(256)) * 4
    for direction in Direction:
        d.feed(direction, junk, 1)
    assert d.stats.malformed + d.stats.abandoned > 0, d.stats
