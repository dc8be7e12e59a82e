"""HTTP/1.1 decoding of a real conversation: Python's http.server and http.client over a relay."""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from wire_relay import Relay, replay, replay_split

from kprobe.protocols import new_decoder
from kprobe.protocols.http1 import path_template

PAN = "4111111111111111"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/chunked"):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            for part in (b"hello ", b"chunked ", b"world"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
            return
        status = 404 if "missing" in self.path else 200
        body = json.dumps({"path": self.path}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1234")  # no body follows a HEAD response
        self.end_headers()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        doc = json.loads(body)
        out = json.dumps({"payment_id": doc["payment_id"], "status": "accepted"}).encode()
        self.send_response(500 if doc.get("fail") else 201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


@pytest.fixture
def conversation():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    relay = Relay(server.server_address)
    conn = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=10)
    calls = [
        ("GET", "/accounts/98721/balance?token=abc", None),
        ("HEAD", "/health", None),
        ("GET", "/chunked", None),
        ("POST", "/payments", {"payment_id": "PAY-98721", "amount": "12.50", "card": PAN, "api_key": "s3cr3t"}),
        ("GET", "/missing/5d41402abc4b2a76b9719d911017c592", None),
        ("POST", "/payments", {"payment_id": "PAY-98722", "fail": True}),
    ]
    answers = []
    for method, path, body in calls:
        data = json.dumps(body).encode() if body else None
        headers = {"Content-Type": "application/json"} if body else {}
        conn.request(method, path, body=data, headers=headers)
        r = conn.getresponse()
        r.read()
        answers.append(r.status)
    conn.close()
    assert relay.connections[0].closed.wait(10)
    yield calls, answers, relay.connections[0]
    relay.close()
    server.shutdown()
    server.server_close()


def _check(exchanges, calls, answers) -> None:
    assert [e.attributes["http.method"] for e in exchanges] == [c[0] for c in calls]
    assert [e.attributes["http.status_code"] for e in exchanges] == answers
    assert exchanges[0].name == "GET /accounts/{id}/balance"
    assert exchanges[4].name == "GET /missing/{id}"
    assert exchanges[3].attributes["body.payment_id"] == "PAY-98721"
    assert exchanges[3].attributes["response.payment_id"] == "PAY-98721"
    assert [e.error for e in exchanges] == [a >= 500 for a in answers]
    for e in exchanges:
        assert e.end_ns >= e.start_ns > 0
        text = json.dumps(e.attributes)
        assert PAN not in text and "s3cr3t" not in text and "token=abc" not in text


def test_real_conversation_decodes_to_one_exchange_per_request(conversation) -> None:
    calls, answers, conn = conversation
    d = new_decoder("http")
    exchanges = replay(d, conn)
    _check(exchanges, calls, answers)
    assert d.stats.malformed == d.stats.unanswered == d.stats.unmatched == 0
    assert d.stats.exchanges == len(calls)


@pytest.mark.parametrize("sizes", [[1], [2, 7], [13, 1, 64], [4096]])
def test_split_anywhere_gives_the_same_exchanges(conversation, sizes) -> None:
    calls, answers, conn = conversation
    exchanges = replay_split(new_decoder("http"), conn, sizes)
    _check(exchanges, calls, answers)


def test_garbage_is_counted_and_decoding_resumes() -> None:
    from kprobe.protocols import Direction

    d = new_decoder("http")
    d.feed(Direction.TO_SERVER, b"\x16\x03\x01garbage-that-is-no-http\r\n\r\n", 1)
    d.feed(Direction.TO_SERVER, b"GET /a/1 HTTP/1.1\r\nHost: x\r\n\r\n", 2)
    out = d.feed(Direction.TO_CLIENT, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 3)
    assert d.stats.malformed == 1
    assert [e.name for e in out] == ["GET /a/{id}"]


def test_path_template() -> None:
    assert path_template("/payments/98721/status") == "/payments/{id}/status"
    assert path_template("/v1/orders/ORD-20261207-0001") == "/v1/orders/{id}"
    assert path_template("/v1/users/me") == "/v1/users/me"
