"""`kprobe run --decode-payloads`: an uninstrumented card host (ISO 8583 built with pyiso8583 over
TCP) and an HTTP payment API, recorded by the real CLI on the real kernel. The decoded spans are
in the store, their counters in `kprobe stats`, and no card data is anywhere kprobe wrote."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.kernel

KPROBE = [sys.executable, "-m", "kprobe"]
PAN = "4761739001010119"
TRACK2 = f"{PAN}=25122011143804400000"
PIN = "0412AC89ABCDEF67"

WORKLOAD = r"""
import json, socket, sys, threading, http.client
from http.server import BaseHTTPRequestHandler, HTTPServer
import iso8583
from iso8583.specs import default_ascii as spec
port = int(sys.argv[1]); PAN, TRACK2, PIN = sys.argv[2:5]
srv = socket.create_server(("127.0.0.1", port))
def host():
    c, _ = srv.accept()
    while True:
        head = c.recv(2)
        if not head: return
        n = int.from_bytes(head, "big"); body = b""
        while len(body) < n: body += c.recv(n - len(body))
        req, _ = iso8583.decode(bytearray(body), spec)
        resp = {"t": req["t"][:2] + "10", "11": req["11"], "37": "RRN" + req["11"] + "000", "39": "00", "2": PAN}
        raw, _ = iso8583.encode(resp, spec); c.sendall(len(raw).to_bytes(2, "big") + bytes(raw))
threading.Thread(target=host, daemon=True).start()
class Api(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_POST(self):
        doc = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        out = json.dumps({"payment_id": doc["payment_id"], "status": "authorised"}).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out))); self.end_headers(); self.wfile.write(out)
api = HTTPServer(("127.0.0.1", 0), Api)
threading.Thread(target=api.serve_forever, daemon=True).start()
s = socket.create_connection(("127.0.0.1", port))
h = http.client.HTTPConnection("127.0.0.1", api.server_address[1])
for i in range(1, 4):
    doc = {"t": "0100", "2": PAN, "3": "000000", "4": "000000001250", "11": f"{i:06d}", "35": TRACK2, "52": PIN}
    raw, _ = iso8583.encode(doc, spec); s.sendall(len(raw).to_bytes(2, "big") + bytes(raw))
    n = int.from_bytes(s.recv(2), "big"); body = b""
    while len(body) < n: body += s.recv(n - len(body))
    h.request("POST", "/payments", body=json.dumps({"payment_id": f"PAY-{i}", "card_number": PAN}),
              headers={"Content-Type": "application/json"})
    h.getresponse().read()
s.close(); h.close()
print("done", flush=True)
"""


def kp(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([*KPROBE, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def root(probes_built):
    if os.geteuid() != 0:
        pytest.skip("attaching eBPF probes needs root (CI runs as root)")


def test_run_decodes_iso8583_and_http_without_card_data(root, tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dmap = tmp_path / "map.yaml"
    dmap.write_text(f"version: 1\nports: {{{port}: iso8583}}\n")
    data = tmp_path / "d"
    run = kp("run", "--data", str(data), "--decode-payloads", "--domain-map", str(dmap), "--no-otlp", "--",
             sys.executable, "-c", WORKLOAD, str(port), PAN, TRACK2, PIN)
    assert run.returncode == 0 and "done" in run.stdout, run.stderr
    rows = json.loads(kp("sql", "--data", str(data), "--format", "JSON",
                         "SELECT name, kind, service, pid, attributes FROM spans ORDER BY ts_ns").stdout)["data"]
    decoded = [r for r in rows if json.loads(r["attributes"]).get("@source") == "kprobe.decoded"]
    iso = [json.loads(r["attributes"]) for r in decoded if r["name"] == "ISO8583 0100"]
    # both ends of each connection are in the one watched process: a client and a server span each
    assert sorted(int(r["kind"]) for r in decoded if r["name"] == "ISO8583 0100") == [2, 2, 2, 3, 3, 3]
    assert sorted({a["iso8583.stan"] for a in iso}) == ["000001", "000002", "000003"]
    assert {a["iso8583.response_code"] for a in iso} == {"00"}
    http = [json.loads(r["attributes"]) for r in decoded if r["name"] == "POST /payments"]
    assert sorted({a["body.payment_id"] for a in http}) == ["PAY-1", "PAY-2", "PAY-3"]
    stats = kp("stats", "--data", str(data))
    assert "payload capture (stopped)" in stats.stdout and "iso8583" in stats.stdout, stats.stdout
    timeline = kp("timeline", "--payment", "PAY-2", "--data", str(data), "--no-analysis")
    assert "POST /payments" in timeline.stdout, timeline.stdout
    # every place kprobe wrote: the store (all of spans, as text), its status files, its own output
    everything = kp("sql", "--data", str(data), "--format", "TSV", "SELECT * FROM spans").stdout
    everything += run.stdout + run.stderr + stats.stdout + timeline.stdout
    for f in data.glob("*.json"):
        everything += f.read_text()
    for secret in (PAN, TRACK2, PIN, PAN[6:12] + PAN[12:]):
        assert secret not in everything, secret
