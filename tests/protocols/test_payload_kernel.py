"""Payload capture on the real kernel: a watched HTTP server and client (separate processes, no
OTel anywhere) become linked decoded spans; an unwatched pair on the same host leaves nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from kprobe.protocols.capture import PayloadCapture

pytestmark = pytest.mark.kernel

SERVER = r"""
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        out = json.dumps({"payment_id": json.loads(body)["payment_id"], "status": "ok"}).encode()
        self.send_response(201); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out))); self.end_headers(); self.wfile.write(out)
s = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
sys.stdin.readline()
s.serve_forever()
"""

CLIENT = r"""
import http.client, json, sys
sys.stdin.readline()
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=10)
for i in range(int(sys.argv[2])):
    c.request("POST", f"/payments/{98700 + i}", body=json.dumps({"payment_id": f"PAY-{98700 + i}",
              "card": "4111111111111111"}), headers={"Content-Type": "application/json"})
    c.getresponse().read()
c.close()
"""


def _server(spawn) -> tuple[subprocess.Popen, int]:
    p = spawn(sys.executable, "-c", SERVER, stdout=subprocess.PIPE)
    return p, int(p.stdout.readline())


def test_watched_pair_becomes_linked_spans_and_unwatched_traffic_is_not_captured(capture) -> None:
    session = capture.session
    payload = PayloadCapture(session.recorder.probes, write=session.store.write).start()
    procs = []
    try:
        server, port = _server(capture.spawn)
        procs.append(server)
        client = capture.spawn(sys.executable, "-c", CLIENT, str(port), "5")
        assert client.wait(30) == 0
        # the same conversation between processes nobody watches
        other = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(other)
        other_port = int(other.stdout.readline())
        other.stdin.write("go\n")
        other.stdin.flush()
        quiet = subprocess.Popen([sys.executable, "-c", CLIENT, str(other_port), "3"], stdin=subprocess.PIPE)
        quiet.communicate(b"go\n", timeout=30)
        time.sleep(0.2)
        payload.flush()
        counters = payload.counters()
        rows = session.store.query_rows(
            "SELECT trace_id, span_id, parent_span_id, name, kind, pid, service, status_code, duration_ns, attributes "
            "FROM spans ORDER BY ts_ns")
    finally:
        payload.stop()
        for p in procs:
            p.kill()
            p.wait()
    decoded = [r for r in rows if json.loads(r["attributes"]).get("@source") == "kprobe.decoded"]
    servers = [r for r in decoded if int(r["kind"]) == 2]
    clients = [r for r in decoded if int(r["kind"]) == 3]
    assert [r["name"] for r in servers] == ["POST /payments/{id}"] * 5, rows
    assert {int(r["pid"]) for r in servers} == {server.pid}
    assert {int(r["pid"]) for r in clients} == {client.pid} and len(clients) == 5
    by_trace = {r["trace_id"]: r for r in clients}
    for s in servers:  # one trace per request across the two processes: client span is the parent
        c = by_trace[s["trace_id"]]
        assert s["parent_span_id"] == c["span_id"] and c["parent_span_id"] == ""
        assert int(c["duration_ns"]) >= int(s["duration_ns"]) > 0
    attrs = [json.loads(r["attributes"]) for r in servers]
    assert [a["body.payment_id"] for a in attrs] == [f"PAY-{98700 + i}" for i in range(5)]
    assert all(a["http.status_code"] == 201 for a in attrs)
    assert "4111111111111111" not in json.dumps(rows)
    assert counters["payload_drops"] == 0
    assert other.pid not in {int(r["pid"]) for r in rows} and quiet.pid not in {int(r["pid"]) for r in rows}
    stats = payload.protocol_stats()["http"]
    assert stats["exchanges"] == 10 and stats["malformed"] == 0


LATE_SERVER = r"""
import socket, time
l = socket.create_server(("127.0.0.1", 0)); print(l.getsockname()[1], flush=True)
for i in range(2):
    c, _ = l.accept(); c.recv(4096); time.sleep(0.3 if i else 0)
    body = b'{"payment_id": "PAY-%d", "status": "settled"}' % i
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    c.close()
"""

GIVING_UP_CLIENT = r"""
import socket, struct, sys
for i in range(2):
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 100000))  # gives up after 100 ms
    body = b'{"payment_id": "PAY-%d"}' % i
    s.sendall(b"POST /settle HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
              % (len(body), body))
    try:
        print(s.recv(4096)[:12], flush=True)
    except BlockingIOError:
        print("timeout", flush=True)
    s.close()
"""


def test_a_reply_to_a_client_that_gave_up_still_ends_the_server_span(capture) -> None:
    """The server answers 300 ms late, after the client timed out and closed: over loopback the
    client's RST arrives during the server's send and unhashes its socket, so the call's exit sees
    local port 0. It is the same connection: the server's span ends with that reply."""
    session = capture.session
    payload = PayloadCapture(session.recorder.probes, write=session.store.write).start()
    try:
        server = capture.spawn(sys.executable, "-c", LATE_SERVER, stdout=subprocess.PIPE)
        port = int(server.stdout.readline())
        client = capture.spawn(sys.executable, "-c", GIVING_UP_CLIENT, str(port), stdout=subprocess.PIPE)
        out, _ = client.communicate(timeout=30)
        assert server.wait(10) == 0
        assert out.split(b"\n")[1] == b"timeout", out  # the scenario happened: the second call gave up
        payload.flush()
        rows = session.store.query_rows("SELECT name, kind, pid, duration_ns, attributes FROM spans ORDER BY ts_ns")
        stats = payload.protocol_stats()["http"]
    finally:
        payload.stop()
    late = [r for r in rows if int(r["kind"]) == 2 and json.loads(r["attributes"]).get("body.payment_id") == "PAY-1"]
    assert len(late) == 1 and int(late[0]["pid"]) == server.pid, rows
    assert int(late[0]["duration_ns"]) >= 300_000_000
    assert json.loads(late[0]["attributes"])["response.payment_id"] == "PAY-1"
    assert stats["exchanges"] == 3, stats  # both sides of PAY-0, the server's side of PAY-1


SLOW_SERVER = r"""
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/slow":
            print("slow", flush=True)
            time.sleep(float(sys.argv[1]))
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")  # one write: no Nagle wait
s = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
sys.stdin.readline()
s.serve_forever()
"""

POSTING_CLIENT = r"""
import http.client, sys
sys.stdin.readline()
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=60)
for i in range(int(sys.argv[2])):
    c.request("POST", sys.argv[3], body=b"x" * int(sys.argv[4]))
    c.getresponse().read()
print("done", flush=True)
"""


def test_records_lost_on_one_connection_leave_the_others_request_in_flight_decoded(capture) -> None:
    """A small ring fills while the drain is held: one connection's flood loses records, another
    connection waits on a slow reply meanwhile. The probe lists the sockets that lost records, so
    only the flooding connection's decoders restart; the waiting request is still decoded whole
    (restarting every decoder on any drop closed it unanswered)."""
    delay_s = 4.0
    session = capture.session
    payload = PayloadCapture(session.recorder.probes, write=session.store.write, ring_bytes=64 << 10).start()
    procs: list[subprocess.Popen] = []
    try:
        server = capture.spawn(sys.executable, "-c", SLOW_SERVER, str(delay_s), stdout=subprocess.PIPE)
        procs.append(server)
        port = int(server.stdout.readline())
        waiting = capture.spawn(sys.executable, "-c", POSTING_CLIENT, str(port), "1", "/slow", "64",
                                stdout=subprocess.PIPE)
        procs.append(waiting)
        assert server.stdout.readline() == b"slow\n"  # the slow request is in flight
        payload.flush()
        with payload._lock:  # the drain stops taking records: the 64 KiB ring fills
            flood = capture.spawn(sys.executable, "-c", POSTING_CLIENT, str(port), "200", "/fast", "1500",
                                  stdout=subprocess.PIPE)
            procs.append(flood)
            flood_out, _ = flood.communicate(timeout=delay_s * 0.75)
            counters_held = payload.counters()
        assert flood_out == b"done\n"
        assert waiting.stdout.readline() == b"done\n"
        payload.flush()
        counters = payload.counters()
        rows = session.store.query_rows(
            "SELECT name, kind, pid, duration_ns FROM spans WHERE attributes LIKE '%kprobe.decoded%'")
    finally:
        payload.stop()
        for p in procs:
            p.kill()
            p.wait()
    print(f"counters while held {counters_held}; after {counters}; ring {payload.ring_stats()}")
    assert counters_held["payload_drops"] > 0, "the ring never filled: nothing was tested"
    assert counters["payload_drops"] == counters_held["payload_drops"]  # drops only while held
    slow = [r for r in rows if r["name"] == "POST /slow"]
    assert sorted(int(r["kind"]) for r in slow) == [2, 3], rows  # client and server span, both whole
    assert all(int(r["duration_ns"]) >= delay_s * 1e9 for r in slow)
    # only the flood's two sockets (its client's end, the server's) restart: at most at their first
    # and their last loss (a short reply can still fit where a long request did not)
    assert 1 <= counters["payload_gaps"] <= 4, counters
    fast = [r for r in rows if r["name"] == "POST /fast" and int(r["pid"]) == flood.pid]
    assert 0 < len(fast) < 200  # some of the flood decoded, the requests around each hole not
