"""ISO 20022 decoding: pacs.008 -> pacs.002 and pain.001 -> pain.002 over raw TCP and over HTTP,
exchanged by real sockets through the relay."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from iso20022_messages import PAN, pacs002, pacs008, pain001, pain002
from wire_relay import Relay, replay, replay_split

from kprobe.protocols import Direction, new_decoder
from kprobe.protocols.iso20022 import parse_document

UETRS = ["eb6305c9-1f7f-49de-aed0-16487c27b42d", "7a562c67-ca16-48ba-b074-65581be6f001",
         "1c5b6f4d-2f61-4d3e-9d1a-0b1c2d3e4f50"]


def _bank(listener: socket.socket) -> None:
    """Answers each pacs.008 with a pacs.002 (RJCT for amounts over 1000) and pain.001 with pain.002."""
    conn, _ = listener.accept()
    buf = b""
    with conn:
        while data := conn.recv(65536):
            buf += data
            while b"</Document>" in buf or b"</p:Document>" in buf:
                end = min(i for i in (buf.find(b"</Document>") + 11, buf.find(b"</p:Document>") + 13) if i > 12)
                doc, buf = buf[:end], buf[end:]
                root = ET.fromstring(doc.strip())
                ns = root.tag[1:].split("}")[0]
                if "pacs.008" in ns:
                    m = parse_document(doc.strip())
                    assert m is not None
                    status = "RJCT" if float(m["amount"]) > 1000 else "ACSC"
                    conn.sendall(pacs002("R" + str(m["msg_id"]), str(m["msg_id"]), str(m["end_to_end_id"]),
                                         str(m["uetr"]), status, "AM02" if status == "RJCT" else ""))
                else:
                    m = parse_document(doc.strip())
                    assert m is not None
                    conn.sendall(pain002("R" + str(m["msg_id"]), str(m["msg_id"]), str(m["end_to_end_id"]), "ACCP"))


@pytest.fixture
def tcp_conversation():
    listener = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=_bank, args=(listener,), daemon=True).start()
    relay = Relay(listener.getsockname())
    with socket.create_connection(("127.0.0.1", relay.port)) as c:
        for i, (uetr, amount) in enumerate(zip(UETRS, ["250.00", "1500.00", "99.99"], strict=True)):
            c.sendall(pacs008(f"M{i}", f"E2E-{i}", uetr, amount))
        c.sendall(pain001("PAIN-1", "E2E-P1", "10.00"))
        got = b""
        while got.count(b"</Document>") < 4:
            got += c.recv(65536)
    assert relay.connections[0].closed.wait(10)
    yield relay.connections[0]
    relay.close()
    listener.close()


def _check(exchanges) -> None:
    pacs = [e for e in exchanges if e.name == "pacs.008"]
    assert [e.attributes["iso20022.uetr"] for e in pacs] == UETRS
    assert [e.attributes["iso20022.end_to_end_id"] for e in pacs] == ["E2E-0", "E2E-1", "E2E-2"]
    assert [e.attributes["iso20022.amount"] for e in pacs] == ["250.00", "1500.00", "99.99"]
    assert [e.attributes["iso20022.status"] for e in pacs] == ["ACSC", "RJCT", "ACSC"]
    assert [e.error for e in pacs] == [False, True, False]
    assert pacs[1].attributes["iso20022.reason"] == "AM02"
    assert pacs[0].attributes["iso20022.settlement_date"] == "2026-12-07"
    (pain,) = [e for e in exchanges if e.name == "pain.001"]
    assert pain.attributes["iso20022.end_to_end_id"] == "E2E-P1" and pain.attributes["iso20022.currency"] == "USD"
    assert pain.attributes["iso20022.status"] == "ACCP"
    text = json.dumps([e.attributes for e in exchanges])
    for secret in (PAN, "Jane Debtor", "DE89370400440532013000", "Acme Corp"):
        assert secret not in text


def test_raw_tcp_stream(tcp_conversation) -> None:
    d = new_decoder("iso20022")
    _check(replay(d, tcp_conversation))
    assert d.stats.malformed == d.stats.unmatched == d.stats.unanswered == 0


@pytest.mark.parametrize("sizes", [[1], [7, 3], [300]])
def test_split_anywhere(tcp_conversation, sizes) -> None:
    _check(replay_split(new_decoder("iso20022"), tcp_conversation, sizes))


class _Api(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        m = parse_document(self.rfile.read(int(self.headers["Content-Length"])))
        assert m is not None
        body = pacs002("R1", str(m["msg_id"]), str(m["end_to_end_id"]), str(m["uetr"]), "ACSP")
        self.send_response(202)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_pacs008_posted_over_http_yields_its_uetr() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    relay = Relay(server.server_address)
    try:
        c = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=10)
        c.request("POST", "/v1/payments", body=pacs008("H1", "E2E-H1", UETRS[0], "12.00"),
                  headers={"Content-Type": "application/xml"})
        assert c.getresponse().read()
        c.close()
        assert relay.connections[0].closed.wait(10)
        (ex,) = replay(new_decoder("http"), relay.connections[0])
    finally:
        relay.close()
        server.shutdown()
        server.server_close()
    assert ex.attributes["iso20022.uetr"] == UETRS[0]
    assert ex.attributes["iso20022.type"] == "pacs.008"
    assert PAN not in json.dumps(ex.attributes)


def test_doctype_is_refused_and_counted() -> None:
    d = new_decoder("iso20022")
    bomb = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><Document xmlns="urn:iso:std:iso:20022:tech:xsd:pacs.008.001.08">&a;</Document>'
    assert d.feed(Direction.TO_SERVER, bomb, 1) == []
    assert d.stats.malformed == 1 and d.stats.messages == 0


def test_unknown_xml_encoding_is_malformed_not_a_crash() -> None:
    """Found by the fuzz test: expat raises LookupError for encoding="TF-8"."""
    d = new_decoder("iso20022")
    doc = b'<?xml version="1.0" encoding="TF-8"?><Document xmlns="urn:iso:std:iso:20022:tech:xsd:pacs.008.001.08"></Document>'
    assert d.feed(Direction.TO_SERVER, doc, 1) == []
    assert d.stats.malformed == 1
    h = new_decoder("http")
    h.feed(Direction.TO_SERVER, b"POST /p HTTP/1.1\r\nContent-Type: application/xml\r\nContent-Length: %d\r\n\r\n%s"
           % (len(doc), doc), 1)
    (ex,) = h.feed(Direction.TO_CLIENT, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 2)
    assert "iso20022.type" not in ex.attributes
