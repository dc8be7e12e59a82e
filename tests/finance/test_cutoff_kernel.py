"""The cut-off scenario on the real kernel, without any OTel: a watched settlement service (HTTP,
decoded from its socket payloads) writes and fsyncs its ledger while a neighbour competes for its
CPU; the delay pushes the ledger write past a configured window, and the timeline names the
window, the slack lost and the kernel root cause."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import time
from datetime import UTC, datetime

import pytest
import yaml

from kprobe.finance.domain import parse
from kprobe.finance.timeline import build, render
from kprobe.protocols.capture import PayloadCapture

pytestmark = pytest.mark.kernel

SERVER = r"""
import json, os, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer
open("/proc/self/comm", "w").write("settlement-svc")
ledger = open(sys.argv[1], "a")
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_POST(self):
        doc = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        e = time.thread_time() + 0.15            # 150 ms of CPU to prepare the settlement
        while time.thread_time() < e: pass
        ledger.write(json.dumps(doc) + "\n"); ledger.flush(); os.fsync(ledger.fileno())
        out = json.dumps({"payment_id": doc["payment_id"], "status": "settled"}).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out))); self.end_headers(); self.wfile.write(out)
s = HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
sys.stdin.readline()
s.serve_forever()
"""

MAP = """
version: 1
calendars: {{every-day: {{base: weekdays, weekend: []}}}}
windows:
  ledger-cutoff: {{timezone: UTC, calendar: every-day, cutoffs: {{settlement: "{cutoff}"}}}}
events:
  - {{name: Settlement request, kind: settlement_instruction, match: {{service: settlement-svc, protocol: http}},
     key: body.payment_id, window: ledger-cutoff}}
  - {{name: Settlement write, kind: ledger_write, match: {{service: settlement-svc, path: "*ledger*"}},
     window: ledger-cutoff}}
"""


def test_kernel_delay_pushes_the_ledger_fsync_past_the_cutoff(capture, tmp_path) -> None:
    session = capture.session
    payload = PayloadCapture(session.recorder.probes, write=session.store.write).start()
    cpu = str(os.cpu_count() - 1)
    server = capture.spawn("chrt", "-r", "10", "taskset", "-c", cpu, "python3", "-c", SERVER,
                           str(tmp_path / "ledger.log"), stdout=subprocess.PIPE)
    hog = None
    try:
        port = int(server.stdout.readline())
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request("POST", "/settle", body=json.dumps({"payment_id": "PAY-W1", "amount": "1"}),
                  headers={"Content-Type": "application/json"})  # warm-up, uncontended
        c.getresponse().read()
        hog = subprocess.Popen(["chrt", "-r", "10", "taskset", "-c", cpu, "python3", "-c",
                                "import time\nprint('spinning', flush=True)\ne=time.monotonic()+30\n"
                                "while time.monotonic()<e: pass"], stdout=subprocess.PIPE)
        assert hog.stdout.readline().strip() == b"spinning"
        start = time.time_ns()
        # the window closes 200 ms after the request: the 150 ms of work fits alone, not beside the hog
        cutoff = datetime.fromtimestamp((start + 200_000_000) / 1e9, tz=UTC).time().isoformat(timespec="microseconds")
        c.request("POST", "/settle", body=json.dumps({"payment_id": "PAY-98721", "amount": "12.50"}),
                  headers={"Content-Type": "application/json"})
        assert c.getresponse().read()
        took = time.time_ns() - start
        c.close()
        hog.kill()
        hog.wait(5)
        dmap = parse(yaml.safe_load(MAP.format(cutoff=cutoff)))
        capture.settle()
        payload.flush()
        tl = build(session.store, dmap, "PAY-98721")
    finally:
        payload.stop()
        for p in (hog, server):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(5)
    text = render(tl, "Payment PAY-98721")
    print(text)
    assert took > 250_000_000, f"the hog did not delay the request ({took / 1e6:.0f} ms): the scenario did not happen"
    labels = [e.label for e in tl.events]
    assert "Settlement request" in labels, text
    writes = [e for e in tl.events if e.kind == "ledger_write"]
    assert any("fsync" in e.label for e in writes), text
    fsync = next(e for e in writes if "fsync" in e.label)
    assert fsync.placement is not None and fsync.placement["window"] == "ledger-cutoff"
    assert fsync.placement["missed"], text
    assert any("Settlement write" in i and "ledger-cutoff" in i and "kernel root cause" in i for i in tl.incidents), text
    # the kernel root cause is named (on a quiet host the neighbour on the CPU; beside other tests' disk
    # traffic the fsync's wait for the device can be the larger cause, and the engine says which)
    assert tl.root_cause and "[ROOT CAUSE]" in text, text
    assert not any(e.label.startswith("Settlement write") and e.ts_ns < start for e in tl.events), \
        "the warm-up payment's ledger writes belong to another payment"
