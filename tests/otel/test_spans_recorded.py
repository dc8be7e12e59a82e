"""Spans sent by the real OTel SDK to a recording session land in the store's `spans` table.

Through the embedded session (the same object `kprobe record`/`run` start): real probes, real
chDB, real gRPC and HTTP exporters. Card numbers must be masked in what is stored, malformed
requests refused and counted, and the counters visible in `kprobe stats`.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

from kprobe.otel.config import OtlpConfig

pytestmark = pytest.mark.kernel


@pytest.fixture
def session(tmp_path: Path, probes_built: None):
    from kprobe.agent.probeset import ProbeConfig
    from kprobe.agent.recorder import RecorderConfig
    from kprobe.embedded import EmbeddedSession

    if os.geteuid() != 0:
        pytest.skip("attaching eBPF probes needs root (CI runs as root)")
    s = EmbeddedSession(tmp_path / "data", RecorderConfig(probes=ProbeConfig(filter_on=True), flush_ms=50),
                        OtlpConfig(grpc_port=0, http_port=0)).start()
    try:
        yield s
    finally:
        s.stop()


def _send(exporter, name: str) -> str:
    provider = TracerProvider(resource=Resource.create(
        {"service.name": "payment-handler", "host.name": "pay-01", "process.pid": os.getpid()}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("kprobe.tests")
    with tracer.start_as_current_span(name) as span:
        span.set_attribute("thread.id", threading.get_native_id())
        span.set_attribute("card.number", "5500 0000 0000 0004")
        span.set_attribute("card.cvv", "999")
        span.set_status(Status(StatusCode.ERROR, "declined for 4111111111111111"))
        sid = f"{span.get_span_context().span_id:016x}"
    provider.shutdown()
    return sid


RANDOM_IDS = {"span_id", "trace_id", "parent_span_id", "service.instance.id"}


def _leaves(x: object, skip: set[str]) -> list[str]:
    """Every scalar in a stored row as text, JSON strings expanded, keys in ``skip`` left out."""
    if isinstance(x, dict):
        return [v for k, val in x.items() if k not in skip for v in _leaves(val, skip)]
    if isinstance(x, list):
        return [v for val in x for v in _leaves(val, skip)]
    if isinstance(x, str) and x[:1] in "{[":
        try:
            return _leaves(json.loads(x), skip)
        except ValueError:
            pass
    return [str(x)]


def test_sdk_spans_are_stored_masked_and_counted(session, tmp_path: Path) -> None:
    rx = session.receiver
    ids = {
        _send(GrpcExporter(endpoint=rx.grpc_endpoint, insecure=True, timeout=30), "POST /pay grpc"): "grpc",
        _send(HttpExporter(endpoint=rx.http_endpoint, timeout=30), "POST /pay http"): "http",
    }
    rows = session.store.query_rows("SELECT span_id, name, pid, tid, service, host, status_code, status_message, "
                                    "attributes FROM spans ORDER BY ts_ns")
    assert {r["span_id"] for r in rows} == set(ids)
    for r in rows:
        assert int(r["pid"]) == os.getpid() and int(r["tid"]) == threading.get_native_id()
        assert (r["service"], r["host"], int(r["status_code"])) == ("payment-handler", "pay-01", 2)
        attrs = json.loads(r["attributes"])
        assert attrs["card.number"] == "550000******0004"
        assert "card.cvv" not in attrs
        assert r["status_message"] == "declined for 411111******1111"
    # every stored value except the random ids (hex/uuid, which may contain "999" by chance)
    values = [v for r in rows for v in _leaves(r, RANDOM_IDS)]
    assert not [v for v in values if "5500000000000004" in v or "0000 0000 0004" in v or "999" in v], values

    # a malformed body is refused with 400 and counted; the receiver keeps serving
    conn = http.client.HTTPConnection("127.0.0.1", rx.http_port, timeout=30)
    conn.request("POST", "/v1/traces", body=b"\xff\x00 not protobuf", headers={"Content-Type": "application/x-protobuf"})
    assert conn.getresponse().status == 400
    conn.close()

    # ... and over gRPC with INVALID_ARGUMENT
    import grpc

    from kprobe.otel.grpc_server import METHOD, SERVICE

    with grpc.insecure_channel(rx.grpc_endpoint) as channel, pytest.raises(grpc.RpcError) as err:
        channel.unary_unary(f"/{SERVICE}/{METHOD}")(b"\x0a\xff\xff garbage", timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    st = session.otel_stats()
    assert st["spans_received"] == 2 and st["spans_stored"] == 2 and st["spans_failed"] == 0
    assert st["requests_rejected_malformed"] == 2
    assert st["values_masked"] >= 2 and st["sensitive_attributes_dropped"] == 2

    # `kprobe stats` (through the recorder's socket) shows the same counters
    out = subprocess.run([sys.executable, "-m", "kprobe", "stats", "--data", str(session.data_dir), "--json"],
                         capture_output=True, text=True, timeout=180, check=True).stdout
    shown = json.loads(out)
    assert shown["stored"]["spans"] == 2
    assert shown["otel"]["spans_stored"] == 2 and shown["otel"]["requests_rejected_malformed"] == 2
    text = subprocess.run([sys.executable, "-m", "kprobe", "stats", "--data", str(session.data_dir)],
                          capture_output=True, text=True, timeout=180, check=True).stdout
    assert "spans received 2, stored 2" in text and "rejected as malformed 2" in text


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CHILD = """
import os, sys
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
p = TracerProvider(resource=Resource.create({"service.name": "batch-settle", "process.pid": os.getpid()}))
p.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=sys.argv[1], timeout=30)))
with p.get_tracer("t").start_as_current_span("settle card 4111-1111-1111-1111"):
    pass
p.shutdown()
"""


def test_kprobe_run_receives_spans_and_stats_keep_the_counts(tmp_path: Path, probes_built: None) -> None:
    """The CLI wiring: `kprobe run` with chosen ports stores the child's spans; stats survive the session."""
    if os.geteuid() != 0:
        pytest.skip("attaching eBPF probes needs root (CI runs as root)")
    data = tmp_path / "data"
    grpc_port, http_port = _free_port(), _free_port()
    url = f"http://127.0.0.1:{http_port}/v1/traces"
    run = subprocess.run([sys.executable, "-m", "kprobe", "run", "--data", str(data), "--otlp-grpc-port", str(grpc_port),
                          "--otlp-http-port", str(http_port), "--", sys.executable, "-c", CHILD, url],
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr
    assert f"OTLP receiver on grpc 127.0.0.1:{grpc_port}, http {url}" in run.stderr
    out = subprocess.run([sys.executable, "-m", "kprobe", "stats", "--data", str(data), "--json"],
                         capture_output=True, text=True, timeout=240, check=True).stdout
    st = json.loads(out)
    assert st["stored"]["spans"] == 1 and st["otel"]["spans_stored"] == 1 and st["otel"]["values_masked"] == 1
    rows = subprocess.run([sys.executable, "-m", "kprobe", "sql", "--data", str(data), "--format", "JSONEachRow",
                           "SELECT name, service FROM spans"], capture_output=True, text=True, timeout=240,
                          check=True).stdout
    assert json.loads(rows) == {"name": "settle card 411111******1111", "service": "batch-settle"}

    off = subprocess.run([sys.executable, "-m", "kprobe", "run", "--data", str(tmp_path / "d2"), "--no-otlp", "--",
                          "true"], capture_output=True, text=True, timeout=240)
    assert off.returncode == 0 and "OTLP receiver" not in off.stderr, off.stderr


def test_taken_default_port_refuses_to_start_unless_no_otlp(tmp_path: Path, probes_built: None) -> None:
    """Another process on 4317 would receive the applications' spans while kprobe records without them:
    kprobe refuses to start (before loading probes), with or without an explicit port; --no-otlp records."""
    import socket

    if os.geteuid() != 0:
        pytest.skip("attaching eBPF probes needs root (CI runs as root)")
    blocker = socket.socket()
    try:
        blocker.bind(("127.0.0.1", 4317))
        blocker.listen()
    except OSError:
        pass  # someone else holds 4317 already: the situation under test
    defaults = {k: v for k, v in os.environ.items() if k not in ("KPROBE_OTLP_GRPC_PORT", "KPROBE_OTLP_HTTP_PORT")}
    try:
        for extra in ([], ["--otlp-grpc-port", "4317"]):
            r = subprocess.run([sys.executable, "-m", "kprobe", "run", "--data", str(tmp_path / "a"), *extra, "--",
                                "true"], capture_output=True, text=True, timeout=240, env=defaults)
            assert r.returncode == 2 and "cannot bind 127.0.0.1:4317" in r.stderr, r.stderr
            assert "--no-otlp" in r.stderr
        off = subprocess.run([sys.executable, "-m", "kprobe", "run", "--data", str(tmp_path / "b"), "--no-otlp", "--",
                              "true"], capture_output=True, text=True, timeout=240)
        assert off.returncode == 0, off.stderr
    finally:
        blocker.close()
