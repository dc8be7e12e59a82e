"""`kprobe timeline`, `kprobe why --payment` and `kprobe latency` over a real chDB store holding
OTLP-shaped spans and spans decoded from a real FIX conversation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from kprobe_fix_session import fix_conversation

from kprobe.protocols import new_decoder
from kprobe.protocols.span_rows import SocketPair, SpanRows
from kprobe.schemas.store_tables import SPAN_COLUMNS
from kprobe.sinks.chdb_store import ChdbStore

T0 = 1_796_684_399_500_000_000  # 2026-12-07T22:59:59.5Z: half a second before Fedwire's 18:00 ET cut-off
MAP = """
version: 1
windows:
  fedwire: {preset: fedwire}
events:
  - {name: Payment received, kind: payment_received, match: {service: payment-handler, name: "POST /pay"},
     key: payment.id, window: fedwire}
  - {name: Risk check, kind: risk_check, match: {service: risk-engine}}
  - {name: Settlement call, kind: settlement_instruction, match: {service: settlement-svc}}
  - {name: Order, kind: order_new, match: {protocol: fix, message: NewOrderSingle}, key: fix.cl_ord_id}
"""


def _otlp_row(ts: int, end: int, trace: str, span: str, parent: str, name: str, service: str, pid: int,
              error: bool = False, **attrs: object) -> tuple:
    return (ts, end, end - ts, trace, span, parent, name, 2, service, "test-host", pid, pid, 2 if error else 0,
            "timeout" if error else "", json.dumps(attrs), "[]")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("business") / "data"
    trace = "ab" * 16
    rows = [
        _otlp_row(T0, T0 + 800_000_000, trace, "1" * 16, "", "POST /pay", "payment-handler", 101, True,
                  **{"payment.id": "98721", "payment.amount": "12.50"}),
        _otlp_row(T0 + 400_000, T0 + 1_600_000, trace, "2" * 16, "1" * 16, "GET /risk", "risk-engine", 102),
        _otlp_row(T0 + 2_000_000, T0 + 790_000_000, trace, "3" * 16, "1" * 16, "SETTLE", "settlement-svc", 103),
        _otlp_row(T0 + 5_000_000, T0 + 6_000_000, "cd" * 16, "4" * 16, "", "POST /pay", "payment-handler", 101,
                  **{"payment.id": "98722"}),
    ]
    spans = SpanRows("test-host")
    pair = SocketPair("127.0.0.1", 40001, "127.0.0.1", 9878, is_client=True)
    exchanges = []
    d = new_decoder("fix")
    for direction, piece, ts in fix_conversation():
        exchanges += d.feed(direction, piece, ts)
    for i, e in enumerate(exchanges):
        spans.add(e, pair=pair, ordinal=i, service="broker-gw", pid=104, tid=104)
    store = ChdbStore(data)
    try:
        cols = {name: [r[i] for r in rows] for i, (name, _) in enumerate(SPAN_COLUMNS)}
        decoded = spans.columns()
        import numpy as np

        merged = {k: np.concatenate([np.array(cols[k], dtype=decoded[k].dtype), decoded[k]]) for k in decoded}
        store.write("spans", merged)
    finally:
        store.close()
    (data / "map.yaml").write_text(MAP)
    return data


def _kprobe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kprobe", *args], capture_output=True, text=True, timeout=120)


def test_timeline_orders_events_with_gaps_and_the_missed_cutoff(data) -> None:
    out = _kprobe("timeline", "--payment", "98721", "--data", str(data), "--domain-map", str(data / "map.yaml"),
                  "--no-analysis", "--json")
    assert out.returncode == 0, out.stderr
    tl = json.loads(out.stdout)
    assert [e["label"] for e in tl["events"]] == ["Payment received", "Risk check", "Settlement call"]
    assert [e["service"] for e in tl["events"]] == ["payment-handler", "risk-engine", "settlement-svc"]
    first = tl["events"][0]
    assert first["window"]["window"] == "fedwire" and first["window"]["missed"]
    assert first["window"]["slack_ns"] == 500_000_000 and first["window"]["value_date"] == "2026-12-07"
    assert len(tl["incidents"]) == 1 and "fedwire customer transfers cut-off" in tl["incidents"][0]
    text = _kprobe("timeline", "--payment", "98721", "--data", str(data), "--domain-map", str(data / "map.yaml"),
                   "--no-analysis")
    assert "22:59:59.500000  Payment received" in text.stdout and "+400 µs" in text.stdout
    assert "MISSED by" in text.stdout


def test_timeline_without_a_domain_map_uses_any_attribute(data) -> None:
    out = _kprobe("timeline", "--payment", "98722", "--data", str(data), "--no-analysis", "--json")
    assert out.returncode == 0, out.stderr
    assert [e["label"] for e in json.loads(out.stdout)["events"]] == ["POST /pay"]
    missing = _kprobe("timeline", "--payment", "nope", "--data", str(data), "--no-analysis")
    assert missing.returncode == 1 and "no spans mention" in missing.stdout


def test_order_timeline_and_latency_from_decoded_fix(data) -> None:
    out = _kprobe("timeline", "--order", "ORD-1-fill", "--data", str(data), "--no-analysis", "--json")
    assert out.returncode == 0, out.stderr
    labels = [e["label"] for e in json.loads(out.stdout)["events"]]
    assert labels == ["NewOrderSingle", "ExecutionReport Trade", "ExecutionReport Trade"]
    lat = _kprobe("latency", "--data", str(data), "--json", "--protocol", "fix")
    rows = json.loads(lat.stdout)
    order = next(r for r in rows if r["what"] == "order-to-ack")
    assert order["group"] == "BROKER->EXCH" and order["n"] == 6 and order["excluded"] == 1 and order["errors"] == 1
    assert 0 < order["p50_ns"] <= order["p99_ns"] <= order["max_ns"]
    assert any(r["what"] == "cancel-to-ack" and r["n"] == 1 for r in rows)


def test_why_payment_names_what_it_could_and_could_not_analyse(data) -> None:
    out = _kprobe("why", "--payment", "98721", "--data", str(data), "--domain-map", str(data / "map.yaml"))
    assert out.returncode == 0, out.stderr
    assert "INCIDENT:" in out.stdout and "note: no kernel analysis" in out.stdout  # no kernel tables filled here
    both = _kprobe("why", "--payment", "98721", "--span", "1" * 16, "--data", str(data))
    assert both.returncode == 2 and "not allowed with" in both.stderr


def test_bad_domain_map_is_a_clear_error(data, tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("events:\n  - {name: X, kind: nope, match: {service: a}}\n")
    out = _kprobe("timeline", "--payment", "98721", "--data", str(data), "--domain-map", str(bad))
    assert out.returncode == 2 and "events[0].kind: unknown kind 'nope'" in out.stderr


def test_decoded_and_otel_spans_of_one_request_are_one_event(tmp_path) -> None:
    """The same POST exported by the SDK and decoded from the socket: one timeline event, not two."""
    from kprobe.finance.timeline import build, default_map
    from kprobe.protocols import Exchange

    rows = SpanRows("test-host")
    pair = SocketPair("127.0.0.1", 8080, "127.0.0.1", 50000, is_client=False)
    rows.add(Exchange("http", "POST /pay", T0 + 100_000, T0 + 700_000_000, False, {"body.payment_id": "P-9"}),
             pair=pair, ordinal=0, service="payment-handler", pid=101, tid=101)
    decoded = rows.columns()
    otel = _otlp_row(T0, T0 + 800_000_000, "ef" * 16, "5" * 16, "", "POST /pay", "payment-handler", 101,
                     **{"payment.id": "P-9"})
    store = ChdbStore(tmp_path / "d")
    try:
        import numpy as np

        store.write("spans", {k: np.concatenate([np.array([otel[i]], dtype=decoded[k].dtype), decoded[k]])
                              for i, (k, _) in enumerate(SPAN_COLUMNS)})
        tl = build(store, default_map("payment"), "P-9", analyse=False)
    finally:
        store.close()
    assert [e.span_id for e in tl.events] == ["5" * 16], tl.to_json()
    assert "1 decoded span(s) merged" in tl.notes[0]
