"""`GET /api/v1/why/business?payment=ID` on the demo's recording: the answer of `kprobe why --payment ID`.

The demo's payment handler puts ``payment.id`` on each span it exports over OTLP, so the real recording
carries the business key next to the kernel rows. Each answer is compared with what the CLI computes on
the same store (:func:`kprobe.finance.timeline.build` with the CLI's default map, shaped as
``cmd_why_business --json`` prints it), and the failed payment's root cause must be the batch job the
demo started (its pid from the demo itself), reached through the incident id the answer links to.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from tests.api.conftest import BATCH, TOKEN, Served, api_get

pytestmark = pytest.mark.kernel


def _cli_why(store: object, kind: str, key: str) -> dict[str, Any]:
    """`kprobe why --payment KEY --json` without a domain map: the function it calls, the JSON it prints."""
    from kprobe.finance.timeline import build, default_map

    tl = build(store, default_map(kind), key, analyse=True)  # type: ignore[arg-type]
    return {"key": key, "kind": kind, "root_cause": tl.root_cause, "incidents": tl.incidents, "notes": tl.notes,
            "events": [e.to_json() for e in tl.events]}


def _all_pages(s: Served, query: str, limit: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    first: dict[str, Any] | None = None
    events: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        status, page = api_get(s.url, f"/api/v1/why/business?{query}&limit={limit}"
                                      + (f"&cursor={cursor}" if cursor else ""))
        assert status == 200, page
        assert len(page["events"]) <= limit
        first = first or page
        events += page["events"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert first is not None
    return first, events


def test_every_payment_is_the_clis_answer_and_the_failed_one_names_the_batch_job(served: Served) -> None:
    payments = served.demo.result["payments"]
    assert payments and any(not p["ok"] for p in payments), payments
    for p in payments:
        key = p["payment"]
        first, events = _all_pages(served, f"payment={quote(key)}", limit=1)
        want = _cli_why(served.store, "payment", key)
        got = {k: first[k] for k in ("key", "kind", "root_cause", "incidents", "notes")} | {"events": events}
        assert got == want, key
        assert first["events_total"] == len(want["events"]) >= 1
        assert any(e["span_id"] == p["span_id"] for e in events), (key, events)
    failed = served.demo.failed
    status, a = api_get(served.url, f"/api/v1/why/business?payment={quote(failed['payment'])}")
    assert status == 200, a
    # ground truth from the demo: the failed span is the one explained, and the batch job is the root cause
    assert a["victim_span_id"] == failed["span_id"] and a["incident_id"] == f"span-{failed['span_id']}"
    batch = served.demo.pid(BATCH)
    assert BATCH in a["root_cause"] and f"PID {batch}" in a["root_cause"], a["root_cause"]
    kernel = [e for e in a["events"] if e["kind"] == "kernel"]
    assert len(kernel) == 1 and kernel[0]["pid"] == batch, a["events"]
    status, inc = api_get(served.url, f"/api/v1/incidents/{a['incident_id']}")
    assert status == 200 and inc["root_cause"]["culprit"]["pid"] == batch, inc


def test_search_offers_the_payment_and_its_why_view(served: Served) -> None:
    key = served.demo.failed["payment"]
    status, res = api_get(served.url, f"/api/v1/search?q={quote(key)}")
    assert status == 200, res
    business = [m for m in res["matches"] if m["kind"] in ("payment", "order")]
    assert business == [{"kind": "payment", "id": key, "route": f"/payment/{quote(key, safe='')}",
                         "label": business[0]["label"]}], res
    assert business[0]["label"].startswith(f"payment {key}: ")


@pytest.mark.parametrize("query, code, words", [
    ("payment=NO-SUCH-PAYMENT-0000", 404, "no spans mention payment 'NO-SUCH-PAYMENT-0000'"),
    ("order=NO-SUCH-ORDER", 404, "no spans mention order 'NO-SUCH-ORDER'"),
    ("payment=a%20b", 400, "payment must match"),
    ("payment=%27%3B%20DROP%20TABLE%20spans", 400, "payment must match"),
    ("payment=" + "9" * 129, 400, "payment must be 1 to 128 characters"),
    ("payment=", 400, "payment must be 1 to 128 characters"),
    ("", 400, "give exactly one of payment or order"),
    ("payment=1&order=2", 400, "give exactly one of payment or order"),
    ("payment=1&payment=2", 400, "payment given 2 times"),
    ("payment=1&cursor=AAAA", 400, "cursor is not one returned by this API"),
    ("payment=1&limit=0", 400, "limit must be between"),
    ("pay=1", 400, "unknown parameter(s): pay"),
])
def test_bad_or_unknown_ids_get_a_clear_4xx(served: Served, query: str, code: int, words: str) -> None:
    status, body = api_get(served.url, f"/api/v1/why/business?{query}")
    assert status == code and words in body["error"]["message"], (query, status, body)


def test_a_cursor_is_bound_to_its_payment(served: Served) -> None:
    payments = [p["payment"] for p in served.demo.result["payments"]]
    many = next((k for k in payments if len(_cli_why(served.store, "payment", k)["events"]) > 1), None)
    if many is None:
        pytest.skip("no payment of this recording has two events to page over")
    _, page = api_get(served.url, f"/api/v1/why/business?payment={quote(many)}&limit=1")
    other = next(k for k in payments if k != many)
    status, body = api_get(served.url, f"/api/v1/why/business?payment={quote(other)}&cursor={page['next_cursor']}")
    assert status == 400 and "another payment or order" in body["error"]["message"], body


def test_the_business_why_needs_the_token(served: Served) -> None:
    key = quote(served.demo.failed["payment"])
    for token in (None, "wrong", TOKEN[:-1]):
        status, body = api_get(served.url, f"/api/v1/why/business?payment={key}", token)
        assert status == 401 and body["error"]["code"] == "unauthorized", (token, body)
