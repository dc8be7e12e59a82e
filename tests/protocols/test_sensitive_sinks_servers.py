"""Card and account data in ISO 8583 and ISO 20022 traffic reach no sink: a watched process talks
ISO 8583 (built with pyiso8583: PAN, track 1 and 2, PIN block, EMV data) to a card host and
ISO 20022 (pacs.008 with names, IBANs and a card number in the remittance text; pacs.002, pain.001)
over raw TCP and HTTP. Recorded twice by the real CLI on the real kernel: into the embedded store,
and scale-out into the real Kafka of deploy/stack.sh (decoded spans to ``<prefix>.spans``). Then a
grep of every sink: every table of the store as text, every message of every topic of the run
(raw bytes and decoded rows), the data directories (status files, spool) and the recorder's own
output. The decoded spans are checked present first, so the grep cannot pass on an empty sink."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack_fixtures import kafka_from_stack

pytestmark = [pytest.mark.kernel, pytest.mark.servers]

KPROBE = [sys.executable, "-m", "kprobe"]
PAN = "4761739001010119"
SECRETS = {
    "PAN": PAN, "PAN digits 7-16 (what a mask keeps out)": PAN[6:],
    "track 2": f"{PAN}=25122011143804400000", "track 1": f"B{PAN}^DOE/JANE^2512201000000000000000",
    "PIN block": "0412AC89ABCDEF67", "EMV data": "9F2608C2C12B098F3DA6E39F2701809F10120110A0",
    "debtor name": "Jane Debtor", "creditor name": "Carl Creditor", "initiating party": "Acme Corp",
    "debtor IBAN": "DE89370400440532013000", "creditor IBAN": "FR1420041010050500013M02606",
    "remittance card": "4111111111111111",
}

WORKLOAD = r"""
import http.client, json, socket, sys, threading
from http.server import BaseHTTPRequestHandler, HTTPServer
import iso8583
from iso8583.specs import default_ascii as spec
sys.path.insert(0, sys.argv[2])
from iso20022_messages import pacs002, pacs008, pain001, pain002
secrets = json.loads(sys.stdin.readline())  # not argv: a command line is recorded (processes table)
PAN = secrets["PAN"]
sys.stdin.readline()  # the recorder watches this pid now

host_srv = socket.create_server(("127.0.0.1", int(sys.argv[1])))
def card_host():
    c, _ = host_srv.accept()
    while head := c.recv(2):
        n = int.from_bytes(head, "big"); body = b""
        while len(body) < n: body += c.recv(n - len(body))
        req, _ = iso8583.decode(bytearray(body), spec)
        resp = {"t": "0110", "2": PAN, "11": req["11"], "37": "RRN" + req["11"] + "000", "39": "00"}
        raw, _ = iso8583.encode(resp, spec); c.sendall(len(raw).to_bytes(2, "big") + bytes(raw))
threading.Thread(target=card_host, daemon=True).start()

xml_srv = socket.create_server(("127.0.0.1", 0))
def xml_peer():  # raw TCP: one document after another, each answered by its status report
    c, _ = xml_srv.accept(); buf = b""
    while chunk := c.recv(65536):
        buf += chunk
        while b"</Document>" in buf:
            doc, buf = buf.split(b"</Document>", 1)
            c.sendall(pacs002("ST-" + str(len(doc)), "M-TCP", "E2E-TCP", "9f1c4c1e-2f5b-4a8e-8d0e-0b5a3c7e1d01", "ACSC"))
threading.Thread(target=xml_peer, daemon=True).start()

class Api(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        out = pain002("PS-1", "M-PAIN", "E2E-PAIN", "ACCP")
        self.send_response(200); self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(out))); self.end_headers(); self.wfile.write(out)
api = HTTPServer(("127.0.0.1", 0), Api)
threading.Thread(target=api.serve_forever, daemon=True).start()

s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
for i in range(1, 4):
    doc = {"t": "0100", "2": PAN, "3": "000000", "4": "000000001250", "11": f"{i:06d}", "35": secrets["track 2"],
           "45": secrets["track 1"], "52": secrets["PIN block"], "55": secrets["EMV data"]}
    raw, _ = iso8583.encode(doc, spec); s.sendall(len(raw).to_bytes(2, "big") + bytes(raw))
    n = int.from_bytes(s.recv(2), "big"); body = b""
    while len(body) < n: body += s.recv(n - len(body))
x = socket.create_connection(xml_srv.getsockname())
x.sendall(pacs008("M-TCP", "E2E-TCP", "9f1c4c1e-2f5b-4a8e-8d0e-0b5a3c7e1d01", "1250.00"))
got = b""
while b"</Document>" not in got: got += x.recv(65536)
h = http.client.HTTPConnection("127.0.0.1", api.server_address[1])
h.request("POST", "/payments", body=pain001("M-PAIN", "E2E-PAIN", "99.00"), headers={"Content-Type": "application/xml"})
h.getresponse().read()
s.close(); x.close(); h.close()
print("done", flush=True)
"""


@pytest.fixture(scope="module")
def kafka() -> Iterator[str]:
    """The Kafka of deploy/stack.sh (started here when it is not running, stopped after)."""
    yield from kafka_from_stack()


@pytest.fixture
def root(probes_built: None) -> None:
    if os.geteuid() != 0:
        pytest.skip("attaching eBPF probes needs root (CI runs as root)")


def _record(tmp_path: Path, name: str, *extra: str) -> tuple[Path, str]:
    """`kprobe record --decode-payloads` watching the workload; the recorder's output (stdout + stderr)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / f"{name}.yaml").write_text(f"version: 1\nports: {{{port}: iso8583}}\n")
    work = subprocess.Popen([sys.executable, "-c", WORKLOAD, str(port), str(Path(__file__).parent)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    data = tmp_path / name
    rec = subprocess.Popen([*KPROBE, "record", "--data", str(data), "--watch-pid", str(work.pid), "--decode-payloads",
                            "--domain-map", str(tmp_path / f"{name}.yaml"), "--no-otlp", "--flush-ms", "200", *extra],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        err = ""
        assert rec.stderr is not None
        while "kprobe: recording" not in err:  # probes attached, payload capture on
            assert time.monotonic() < deadline and rec.poll() is None, err
            err += rec.stderr.readline()
        out, _ = work.communicate(json.dumps(SECRETS) + "\ngo\n", timeout=60)
        assert work.returncode == 0 and "done" in out, out
        time.sleep(1.0)
        rec.send_signal(signal.SIGINT)
        rest_out, rest_err = rec.communicate(timeout=120)
        assert rec.returncode == 0, err + rest_err
        return data, rest_out + err + rest_err
    finally:
        for p in (work, rec):
            if p.poll() is None:
                p.kill()
                p.wait()


def _files_text(data: Path) -> str:
    """Every file kprobe left in its data directory (status, spool, anything), as text."""
    return "".join(f.read_bytes().decode("latin-1") for f in data.rglob("*") if f.is_file())


def _assert_no_secret(where: str, text: str) -> None:
    leaked = {k: text[max(0, text.index(v) - 120):text.index(v) + len(v) + 40] for k, v in SECRETS.items() if v in text}
    assert not leaked, f"{where}: {leaked}"


def _check_decoded(attrs: list[dict]) -> None:
    """The spans the grep is about are there: ISO 8583 by STAN, ISO 20022 over TCP and over HTTP."""
    stans = {a.get("iso8583.stan") for a in attrs if a.get("protocol") == "iso8583"}
    assert {"000001", "000002", "000003"} <= stans, attrs
    assert any(a.get("iso20022.uetr") == "9f1c4c1e-2f5b-4a8e-8d0e-0b5a3c7e1d01" for a in attrs), attrs
    assert any(a.get("iso20022.end_to_end_id") == "E2E-PAIN" for a in attrs), attrs


def test_no_card_or_account_data_in_the_embedded_store_files_or_logs(root, tmp_path: Path) -> None:
    data, output = _record(tmp_path, "embedded")
    tables = subprocess.run([*KPROBE, "sql", "--data", str(data), "--format", "TSV", "SHOW TABLES"],
                            capture_output=True, text=True, timeout=120)
    assert tables.returncode == 0, tables.stderr
    names = tables.stdout.split()
    assert "spans" in names and "syscall" in names, names
    dump = ""
    for t in names:
        r = subprocess.run([*KPROBE, "sql", "--data", str(data), "--format", "TSV", f"SELECT * FROM {t}"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        dump += r.stdout
        if t == "spans":
            spans = r.stdout
    attrs = []
    for line in spans.splitlines():
        attrs += [json.loads(c) for c in line.split("\t") if c.startswith('{"@source":"kprobe.decoded"')]
    _check_decoded(attrs)
    _assert_no_secret("store", dump)
    _assert_no_secret("data directory", _files_text(data))
    _assert_no_secret("recorder output", output)


def test_no_card_or_account_data_in_kafka_topics_spool_or_logs(root, kafka: str, tmp_path: Path) -> None:
    import confluent_kafka
    from confluent_kafka.admin import AdminClient

    from kprobe.topics.wire import columns_of, decode

    prefix = f"kps{uuid.uuid4().hex[:8]}"
    data, output = _record(tmp_path, "kafka", "--kafka", kafka, "--kafka-prefix", prefix)
    topics = sorted(t for t in AdminClient({"bootstrap.servers": kafka}).list_topics(timeout=30).topics
                    if t.startswith(prefix + "."))
    assert f"{prefix}.spans" in topics, topics
    consumer = confluent_kafka.Consumer({"bootstrap.servers": kafka, "group.id": prefix,
                                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    raw, rows, attrs = b"", "", []
    try:
        consumer.subscribe(topics)
        idle_until = time.monotonic() + 20
        while time.monotonic() < idle_until:  # until nothing more arrives for 5 s
            msgs = consumer.consume(num_messages=500, timeout=1.0)
            for m in msgs:
                assert m.error() is None, m.error()
                value = m.value()
                raw += value
                _, batch = decode(value)
                cols = columns_of(batch)
                rows += repr({k: list(v) for k, v in cols.items()})
                if m.topic() == f"{prefix}.spans":
                    attrs += [json.loads(a) for a in cols["attributes"]]
            if msgs:
                idle_until = max(idle_until, time.monotonic() + 5)
    finally:
        consumer.close()
    _check_decoded(attrs)
    _assert_no_secret("Kafka messages (raw bytes)", raw.decode("latin-1"))
    _assert_no_secret("Kafka messages (decoded rows)", rows)
    _assert_no_secret("data directory (status, spool)", _files_text(data))
    _assert_no_secret("recorder output", output)


def test_a_card_number_in_a_command_line_is_masked_in_the_processes_table(root, tmp_path: Path) -> None:
    """A command line holding a card number (a script given a PAN to refund; here the recorder's own,
    the one process sure to be in ``processes``, through the name of its domain map file) is stored
    masked like every other free text."""
    card_dir = tmp_path / f"refund-{PAN}"
    card_dir.mkdir()
    data, _ = _record(card_dir, "cmdline")
    rows = subprocess.run([*KPROBE, "sql", "--data", str(data), "--format", "TSV",
                           "SELECT cmdline FROM processes WHERE position(cmdline, 'kprobe record') > 0"],
                          capture_output=True, text=True, timeout=120)
    assert rows.returncode == 0 and "refund-" in rows.stdout, rows.stdout + rows.stderr  # the recorder was seen
    _assert_no_secret("processes.cmdline", rows.stdout)
