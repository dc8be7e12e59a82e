"""Incidents, why, spans and traces: thin HTTP shapes around ``kprobe.causal`` (what `kprobe why`/`incidents` run).

The analysis JSON is the CLI's ``--json`` output, plus ``chain_text``: each link in the words the
CLI prints (``phrase``), so the UI draws the same chain the terminal shows.
"""

from __future__ import annotations

import argparse
from typing import Any

from kprobe.api import cursor
from kprobe.api.errors import ApiError, bad_request, not_found
from kprobe.causal.incidents import incidents, parse_incident_id
from kprobe.causal.model import Analysis
from kprobe.causal.records import Store
from kprobe.causal.span_chain import SPAN_COLS, SpanAnalysis, SpanLookupError, SpanRef, pick_span, trace_spans
from kprobe.causal.target import Target, explain, parse_target
from kprobe.causal.why import NoDataError, phrase, render_text

MAX_INCIDENT_OFFSET = 2000


def list_incidents(store: Store, slow_ms: int, limit: int, after: str | None) -> dict[str, Any]:
    """A page of `kprobe incidents`, newest first. The cursor holds the offset into that ranking."""
    offset = cursor.decode(after, {"o": int, "s": int})["o"] if after else 0
    if after and cursor.decode(after, {"o": int, "s": int})["s"] != slow_ms:
        raise bad_request("cursor belongs to another slow_ms; start again without it")
    if offset + limit > MAX_INCIDENT_OFFSET:
        raise bad_request(f"incidents are paged up to {MAX_INCIDENT_OFFSET}; raise slow_ms to see older ones")
    found = incidents(store, slow_ms * 1_000_000, offset + limit + 1)
    page = found[offset:offset + limit]
    more = len(found) > offset + limit
    return {"items": [i.to_json() for i in page],
            "next_cursor": cursor.encode({"o": offset + limit, "s": slow_ms}) if more else None}


def _analysis_json(a: Analysis, sa: SpanAnalysis | None) -> dict[str, Any]:
    d = sa.to_json() if sa else a.to_json()
    links = [phrase(c) for c in a.chain]
    text = sa.render() if sa else render_text(a)
    # the chain's head in the CLI's words: the span, else the first link of the printed chain
    head = sa.span.head() if sa else (text.split("\n", 1)[0].split(" ← ", 1)[0] if a.chain else "")
    d["chain_text"] = ([head] if head else []) + links
    d["text"] = text
    return d


def analyse(store: Store, target: Target) -> dict[str, Any]:
    """`kprobe why` for one target; 404 when nothing was recorded for it."""
    try:
        a, sa = explain(store, target)
    except (NoDataError, SpanLookupError) as e:
        raise not_found(str(e)) from None
    except ValueError as e:
        raise bad_request(str(e)) from None
    return _analysis_json(a, sa)


def why_target(args: dict[str, Any]) -> Target:
    """The target the query names, validated by the CLI's own ``parse_target`` (same rules, same words)."""
    chosen = [k for k in ("span", "trace", "incident", "pid") if args.get(k) is not None]
    if len(chosen) != 1:
        raise bad_request("give exactly one of span, trace, incident, or pid (with from and to)")
    ns = argparse.Namespace(span=args.get("span"), trace=args.get("trace"), incident=args.get("incident"),
                            pid=args.get("pid"), tid=args.get("tid"),
                            from_=None if args.get("from") is None else str(args["from"]),
                            to=None if args.get("to") is None else str(args["to"]))
    if ns.incident is None and ns.pid is None and (ns.from_ or ns.to or ns.tid is not None):
        raise bad_request("tid, from and to go with pid")
    try:
        return parse_target(ns)
    except ValueError as e:
        raise bad_request(str(e)) from None


def incident(store: Store, incident_id: str) -> dict[str, Any]:
    """One incident explained: the analysis of `kprobe why --incident ID`."""
    try:
        kind, val = parse_incident_id(incident_id)
    except ValueError as e:
        raise bad_request(str(e)) from None
    if kind == "span":
        target = Target(span_id=val)
    else:
        pid, tid, lo, hi = val
        target = Target(pid=pid, tid=tid, from_ns=lo, to_ns=hi)
    d = analyse(store, target)
    d["id"] = incident_id.strip().lower()
    return d


def trace(store: Store, trace_id: str) -> dict[str, Any]:
    """A trace's spans in start order, and the one `kprobe why --trace` would explain."""
    try:
        spans = trace_spans(store, trace_id)
    except SpanLookupError as e:
        raise not_found(str(e)) from None
    except ValueError as e:
        raise bad_request(str(e)) from None
    return {"trace_id": trace_id.lower(), "spans": [s.to_json() for s in spans],
            "explain_span_id": pick_span(spans).span_id}


def _quote(text: str) -> str:
    """A ClickHouse string literal. Callers pass pattern-checked text; this still escapes, never trusts."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def list_spans(store: Store, args: dict[str, Any]) -> dict[str, Any]:
    """Spans by trace, service, pid, status and time, oldest first, keyset-paged on (start, span id)."""
    where = []
    if args.get("trace_id"):
        where.append(f"trace_id = {_quote(args['trace_id'])}")
    if args.get("service"):
        where.append(f"service = {_quote(args['service'])}")
    if args.get("pid") is not None:
        where.append(f"pid = {int(args['pid'])}")
    if args.get("status") == "error":
        where.append("status_code = 2")
    if args.get("from") is not None:
        where.append(f"end_ns >= {int(args['from'])}")
    if args.get("to") is not None:
        where.append(f"ts_ns <= {int(args['to'])}")
    if args.get("cursor"):
        c = cursor.decode(args["cursor"], {"ts": int, "id": str})
        if len(c["id"]) != 16 or any(ch not in "0123456789abcdef" for ch in c["id"]):
            raise bad_request("cursor is not one returned by this API")
        where.append(f"(ts_ns, span_id) > ({int(c['ts'])}, {_quote(c['id'])})")
    limit = int(args["limit"])
    cond = (" WHERE " + " AND ".join(where)) if where else ""
    rows = store.query_rows(f"SELECT {SPAN_COLS} FROM spans{cond} ORDER BY ts_ns, span_id LIMIT {limit + 1}")
    spans = [SpanRef.from_row(r) for r in rows]
    page = spans[:limit]
    nxt = cursor.encode({"ts": page[-1].start_ns, "id": page[-1].span_id}) if len(spans) > limit else None
    return {"items": [s.to_json() for s in page], "next_cursor": nxt}


def store_error(e: Exception) -> ApiError:
    return ApiError(503, "store_unavailable", f"the store did not answer: {e}")
