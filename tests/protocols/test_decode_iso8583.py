"""ISO 8583 decoding of messages built by pyiso8583 (the generator the issue names), exchanged
over real TCP through the relay; card data must not survive decoding."""

from __future__ import annotations

import json
import socket
import threading

import iso8583
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from iso8583.specs import default_ascii as SPEC
from wire_relay import Relay, replay, replay_split

from kprobe.protocols import Direction, new_decoder
from kprobe.protocols.iso8583 import FIELDS, KEPT, NEVER_STORED, Iso8583Decoder, parse_message

PAN = "4111111111111111"
TRACK2 = f"{PAN}=25121011234567890"
TRACK1 = f"B{PAN}^DOE/JOHN^25121011234567890"
PIN_BLOCK = "0412AC89ABCDEF67"
ICC = "9F2608AABBCCDDEEFF00119F2701809F10120110A00003220000000000000000000000FF"
SENSITIVE = (PAN, "1234567890", PIN_BLOCK, ICC, "DOE/JOHN")


def _frame(raw: bytes, framing: str) -> bytes:
    return (len(raw).to_bytes(2, "big") if framing == "binary2" else b"%04d" % len(raw)) + raw


def _read_frame(sock: socket.socket, framing: str) -> bytes | None:
    head = 2 if framing == "binary2" else 4
    buf = b""
    while len(buf) < head:
        chunk = sock.recv(head - len(buf))
        if not chunk:
            return None
        buf += chunk
    n = int.from_bytes(buf, "big") if framing == "binary2" else int(buf)
    body = b""
    while len(body) < n:
        body += sock.recv(n - len(body))
    return body


def _host(listener: socket.socket, framing: str) -> None:
    """An issuer host: answers each request with MTI+10, same STAN, its own RRN and a response code."""
    conn, _ = listener.accept()
    with conn:
        n = 0
        while (body := _read_frame(conn, framing)) is not None:
            req, _ = iso8583.decode(bytearray(body), SPEC)
            n += 1
            mti = req["t"][:2] + str(int(req["t"][2]) + 1) + req["t"][3]
            resp = {"t": mti, "11": req["11"], "37": f"RRN{n:09d}", "39": "05" if req.get("4") == "000000099999" else "00",
                    "41": req.get("41", "TERM0001"), "2": req.get("2", PAN), "55": ICC}
            raw, _ = iso8583.encode(resp, SPEC)
            conn.sendall(_frame(bytes(raw), framing))


def _requests() -> list[dict]:
    base = {"3": "000000", "7": "1207150405", "41": "TERM0001", "42": "MERCHANT0000001", "49": "978"}
    return [
        {**base, "t": "0100", "2": PAN, "4": "000000001250", "11": "000001", "14": "2512", "35": TRACK2, "52": PIN_BLOCK},
        {**base, "t": "0200", "2": PAN, "4": "000000004200", "11": "000002", "45": TRACK1, "55": ICC},
        {**base, "t": "0200", "4": "000000099999", "11": "000003", "36": "0112345678901234567890=1234"},
        {**base, "t": "0400", "2": PAN, "4": "000000004200", "11": "000004", "90": "0200000002" + "0" * 32,
         "102": "1234567890"},
        {**base, "t": "0800", "11": "000005", "70": "301"},
    ]


@pytest.fixture(params=["binary2", "ascii4"])
def conversation(request):
    framing = request.param
    listener = socket.create_server(("127.0.0.1", 0))
    t = threading.Thread(target=_host, args=(listener, framing), daemon=True)
    t.start()
    relay = Relay(listener.getsockname())
    reqs = _requests()
    with socket.create_connection(("127.0.0.1", relay.port)) as c:
        for r in reqs:
            raw, _ = iso8583.encode(dict(r), SPEC)
            c.sendall(_frame(bytes(raw), framing))
        for _ in reqs:
            assert _read_frame(c, framing) is not None
    assert relay.connections[0].closed.wait(10)
    yield reqs, relay.connections[0]
    relay.close()
    listener.close()


def _check(exchanges, reqs) -> None:
    assert [e.attributes["iso8583.mti"] for e in exchanges] == [r["t"] for r in reqs]
    assert [e.attributes["iso8583.stan"] for e in exchanges] == [r["11"] for r in reqs]
    assert [e.attributes["iso8583.rrn"] for e in exchanges] == [f"RRN{i:09d}" for i in range(1, len(reqs) + 1)]
    assert [e.error for e in exchanges] == [r.get("4") == "000000099999" for r in reqs]
    assert exchanges[1].attributes["iso8583.response_mti"] == "0210"
    assert exchanges[0].attributes["iso8583.amount"] == "000000001250"
    text = json.dumps([e.attributes for e in exchanges]) + "".join(e.name for e in exchanges)
    for value in SENSITIVE:
        assert value not in text


def test_pyiso8583_stream_decodes_without_card_data(conversation) -> None:
    reqs, conn = conversation
    assert PAN.encode() in conn.stream(Direction.TO_SERVER)  # the card data did cross the wire
    d = new_decoder("iso8583")
    _check(replay(d, conn), reqs)
    assert d.stats.malformed == d.stats.unmatched == d.stats.unanswered == 0


@pytest.mark.parametrize("sizes", [[1], [3, 1, 7], [50]])
def test_split_anywhere(conversation, sizes) -> None:
    reqs, conn = conversation
    _check(replay_split(new_decoder("iso8583"), conn, sizes), reqs)


def test_spec_matches_pyiso8583_default_ascii() -> None:
    assert FIELDS == {n: (SPEC[str(n)]["len_type"], SPEC[str(n)]["max_len"]) for n in range(1, 129)}


_values = st.dictionaries(
    st.sampled_from([n for n in range(2, 129) if n not in (1, 65)]),
    st.text(alphabet="0123456789ABCDEF", min_size=1, max_size=40),
    max_size=20,
)


@settings(max_examples=300, deadline=None)
@given(_values, st.sampled_from(["0100", "0110", "0200", "0210", "0420", "0800"]))
def test_parse_agrees_with_pyiso8583_on_random_messages(values, mti) -> None:
    doc: dict[str, str] = {"t": mti}
    for n, v in values.items():
        len_type, max_len = FIELDS[n]
        doc[str(n)] = (v * (max_len // len(v) + 1))[:max_len] if len_type == 0 else v[:max_len]
    raw, _ = iso8583.encode(dict(doc), SPEC)
    parsed = parse_message(bytes(raw))
    expected = {KEPT[int(k)]: v.strip() for k, v in doc.items() if k.isdigit() and int(k) in KEPT}
    assert parsed == {"mti": mti, **expected}
    for n in NEVER_STORED:
        assert str(n) not in doc or doc[str(n)] not in parsed.values() or doc[str(n)] in expected.values()


def test_impossible_length_abandons_the_direction_and_is_counted() -> None:
    d = Iso8583Decoder(framing="ascii4")
    d.feed(Direction.TO_SERVER, b"ABCD0200", 1)
    assert d.stats.abandoned == 1
    assert d.feed(Direction.TO_SERVER, b"0004abcd", 2) == []


def test_unknown_framing_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="framing must be"):
        Iso8583Decoder(framing="bcd")
