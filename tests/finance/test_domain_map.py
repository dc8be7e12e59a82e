"""The domain map: the documented example loads, mistakes are reported with their place, spans classify."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from kprobe.finance.domain import DomainMapError, load, parse
from kprobe.finance.windows import utc_ns

EXAMPLE = Path(__file__).resolve().parents[2] / "finance" / "domain-map.example.yaml"


def test_the_documented_example_loads() -> None:
    m = load(EXAMPLE)
    assert m.ports == {5432: "postgresql", 9878: "fix", 8583: "iso8583"}
    assert [r.kind for r in m.events][:3] == ["payment_received", "risk_check", "settlement_instruction"]
    eod = m.windows["ledger-eod"]
    assert not eod.calendar.is_business_day(__import__("datetime").date(2026, 12, 31))  # configured holiday
    assert eod.locate(utc_ns("2026-12-07T15:00:00Z")).cutoff_ns == utc_ns("2026-12-07T16:30:00Z")
    assert [r.name for r in m.file_rules()] == ["Settlement write"]


def test_every_problem_is_reported_with_its_place() -> None:
    doc = yaml.safe_load("""
version: 1
ports: {5432: postgres, 70000: http}
calendars: {c1: {base: mars}}
windows:
  w1: {preset: fedwir}
  w2: {timezone: Mars/Olympus, cutoffs: {eod: "16:30"}}
  w3: {timezone: Europe/London, cutoffs: {eod: "25:99"}}
events:
  - {name: A, kind: payment_recieved, match: {service: x}}
  - {name: B, match: {protocol: fixx}}
  - {name: C, match: {service: y}, window: nope, key: "body.id ~ ("}
  - {match: {colour: red}}
""")
    with pytest.raises(DomainMapError) as e:
        parse(doc, "map.yaml")
    text = str(e.value)
    for expected in ("ports.5432: unknown protocol 'postgres'", "ports.70000: a TCP port number",
                     "calendars.c1.base: unknown calendar 'mars'", "windows.w1.preset: unknown preset 'fedwir'",
                     "windows.w2", "windows.w3.cutoffs.eod: '25:99' is not a time of day",
                     "events[0].kind: unknown kind 'payment_recieved'", "events[1].match.protocol: unknown protocol 'fixx'",
                     "events[2].key: bad regex", "events[2].window: unknown window 'nope'", "events[3].name",
                     "events[3].match.colour: unknown condition"):
        assert expected in text, (expected, text)
    assert text.startswith("map.yaml: ")


def test_bad_yaml_is_a_clear_error(tmp_path) -> None:
    p = tmp_path / "m.yaml"
    p.write_text("events: [\n")
    with pytest.raises(DomainMapError, match="not valid YAML"):
        load(p)
    with pytest.raises(DomainMapError, match="cannot read"):
        load(tmp_path / "missing.yaml")


def test_spans_classify_and_keys_extract() -> None:
    m = load(EXAMPLE)

    def span(service: str, name: str, **attrs: object) -> tuple[dict, dict]:
        return {"service": service, "name": name, "status_code": 0}, {"@source": "kprobe.decoded", **attrs}

    s, a = span("payment-handler", "POST /pay", protocol="http", **{"http.method": "POST", "http.route": "/pay",
                                                                 "body.payment_id": "98721"})
    rule = m.classify(s, a)
    assert rule is not None and rule.kind == "payment_received" and rule.key_of(a) == "98721"
    s, a = span("risk-engine", "GET /risk/{id}", protocol="http", **{"http.target": "/risk/98721"})
    rule = m.classify(s, a)
    assert rule is not None and rule.kind == "risk_check" and rule.key_of(a) == "98721"
    s, a = span("gw", "NewOrderSingle", protocol="fix", **{"fix.cl_ord_id": "ORD-1"})
    assert m.classify(s, a).key_of(a) == "ORD-1"  # type: ignore[union-attr]
    s, a = span("gw", "pacs.008", protocol="iso20022", **{"iso20022.type": "pacs.008", "iso20022.uetr": "u-1"})
    assert m.classify(s, a).kind == "settlement_instruction"  # type: ignore[union-attr]
    s, a = span("other", "GET /", protocol="http")
    assert m.classify(s, a) is None
    assert json.dumps(m.ports)
