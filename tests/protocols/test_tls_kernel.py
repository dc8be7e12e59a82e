"""HTTPS without instrumentation: Python's ssl (OpenSSL) server and client in watched processes,
decoded from the plaintext the OpenSSL uprobes see; the socket bytes themselves are ciphertext."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from kprobe.protocols.capture import PayloadCapture, libssl_paths

pytestmark = [pytest.mark.kernel,
              pytest.mark.skipif(not libssl_paths(), reason="no libssl on this machine (ldconfig -p)")]

SERVER = r"""
import json, ssl, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_POST(self):
        doc = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        out = json.dumps({"payment_id": doc["payment_id"], "status": "ok"}).encode()
        self.send_response(201); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out))); self.end_headers(); self.wfile.write(out)
s = HTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(sys.argv[1], sys.argv[2])
s.socket = ctx.wrap_socket(s.socket, server_side=True)
print(s.server_address[1], flush=True)
sys.stdin.readline()
s.serve_forever()
"""

CLIENT = r"""
import http.client, json, ssl, sys
sys.stdin.readline()
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.load_verify_locations(sys.argv[2])
c = http.client.HTTPSConnection("localhost", int(sys.argv[1]), context=ctx, timeout=10)
for i in range(4):
    c.request("POST", f"/v1/payments/{700 + i}", body=json.dumps({"payment_id": f"TLS-{i}", "pan": "4111111111111111"}),
              headers={"Content-Type": "application/json"})
    assert c.getresponse().read()
c.close()
"""


def test_https_payment_api_decoded_through_openssl_uprobes(capture, tmp_path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    session = capture.session
    payload = PayloadCapture(session.recorder.probes, write=session.store.write).start()
    server = None
    try:
        assert payload.tls_libraries, payload.tls_errors
        server = capture.spawn(sys.executable, "-c", SERVER, str(cert), str(key), stdout=subprocess.PIPE)
        port = int(server.stdout.readline())
        client = capture.spawn(sys.executable, "-c", CLIENT, str(port), str(cert))
        assert client.wait(30) == 0
        time.sleep(0.2)
        payload.flush()
        rows = session.store.query_rows("SELECT name, kind, pid, trace_id, span_id, parent_span_id, attributes "
                                        "FROM spans ORDER BY ts_ns")
        counters = payload.counters()
    finally:
        payload.stop()
        if server is not None:
            server.kill()
            server.wait(5)
    decoded = [r for r in rows if json.loads(r["attributes"]).get("@source") == "kprobe.decoded"]
    servers = [r for r in decoded if int(r["kind"]) == 2]
    clients = [r for r in decoded if int(r["kind"]) == 3]
    assert [r["name"] for r in servers] == ["POST /v1/payments/{id}"] * 4, (rows, counters)
    assert [json.loads(r["attributes"])["body.payment_id"] for r in servers] == [f"TLS-{i}" for i in range(4)]
    assert {int(r["pid"]) for r in servers} == {server.pid} and {int(r["pid"]) for r in clients} == {client.pid}
    by_trace = {r["trace_id"]: r for r in clients}
    assert all(s["parent_span_id"] == by_trace[s["trace_id"]]["span_id"] for s in servers)
    assert "4111111111111111" not in json.dumps(rows)
    assert counters["payload_drops"] == 0
