"""Events, processes, stats, the recorded time extent, and search: what `kprobe events`/`stats` show, paged.

Events are read with ``kprobe.query.events`` (the CLI's query and its one-line summaries); the
cursor continues after the last (timestamp, rows already given at that timestamp).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from kprobe.api import cursor
from kprobe.api.business_endpoints import search_matches as business_matches
from kprobe.api.errors import bad_request
from kprobe.causal.incidents import parse_incident_id
from kprobe.causal.records import Store
from kprobe.causal.span_chain import SPAN_COLS, SpanLookupError, SpanRef, find_span, trace_spans
from kprobe.finance.domain import DomainMap
from kprobe.query.events import EventQuery, fetch, summary
from kprobe.query.stats import collect

SEARCH_PATTERN = r"^[A-Za-z0-9._:@/+=-]{1,128}$"


def list_events(store: Store, args: dict[str, Any]) -> dict[str, Any]:
    """`kprobe events` as pages. ``detail=summary`` gives each row's CLI line instead of every column."""
    limit = int(args["limit"])
    after_ts, seen = None, 0
    if args.get("cursor"):
        c = cursor.decode(args["cursor"], {"ts": int, "k": int})
        after_ts, seen = c["ts"], c["k"]
    lo = args.get("from")
    start = max(lo, after_ts) if lo is not None and after_ts is not None else (after_ts if after_ts is not None
                                                                                  else lo)
    if start is not None and args.get("to") is not None and start > args["to"]:
        return {"items": [], "next_cursor": None}
    types = args.get("type")
    rows: list[dict] = []
    want = limit + seen + 1
    for _ in range(4):       # rows that began before the cursor but end after it come back: read more
        q = EventQuery(pid=args.get("pid"), types=types, from_ns=start, to_ns=args.get("to"), limit=want)
        got = fetch(store, q)
        if after_ts is not None:
            kept = [r for r in got if int(r["ts"]) > after_ts]
            at = [r for r in got if int(r["ts"]) == after_ts][seen:]
            rows = at + kept
        else:
            rows = got
        if len(got) < want or len(rows) > limit:
            break
        want *= 4
    page = rows[:limit]
    nxt = None
    if len(rows) > limit:
        last = int(page[-1]["ts"])
        same = sum(1 for r in page if int(r["ts"]) == last)
        nxt = cursor.encode({"ts": last, "k": same + (seen if after_ts == last else 0)})
    detail = args.get("detail") or "full"
    items = [dict(r, text=summary(r)) if detail == "full" else
             {"type": r["type"], "ts": r["ts"], "tgid": r.get("tgid", r.get("victim_pid", 0)),
              "tid": r.get("tid", 0), "text": summary(r)} for r in page]
    return {"items": items, "next_cursor": nxt}


def list_processes(store: Store, args: dict[str, Any]) -> dict[str, Any]:
    """Processes the recorder identified (latest name, exe, service), by pid, keyset-paged on pid."""
    where = []
    if args.get("pid") is not None:
        where.append(f"tgid = {int(args['pid'])}")
    if args.get("cursor"):
        where.append(f"tgid > {int(cursor.decode(args['cursor'], {'pid': int})['pid'])}")
    limit = int(args["limit"])
    cond = (" WHERE " + " AND ".join(where)) if where else ""
    rows = store.query_rows(
        "SELECT tgid, argMax(comm, ts) AS comm, argMax(exe, ts) AS exe, argMax(cmdline, ts) AS cmdline, "
        "argMax(service, ts) AS service, argMax(host, ts) AS host, min(ts) AS first_seen_ns, "
        f"max(ts) AS last_seen_ns FROM processes{cond} GROUP BY tgid ORDER BY tgid LIMIT {limit + 1}")
    page = [{"pid": int(r["tgid"]), "comm": r["comm"], "exe": r["exe"], "cmdline": r["cmdline"],
             "service": r["service"], "host": r["host"], "first_seen_ns": int(r["first_seen_ns"]),
             "last_seen_ns": int(r["last_seen_ns"])} for r in rows[:limit]]
    nxt = cursor.encode({"pid": page[-1]["pid"]}) if len(rows) > limit else None
    return {"items": page, "next_cursor": nxt}


def stats(store: Store, data_dir: Path) -> dict[str, Any]:
    return collect(store, data_dir)


def extent(store: Store, pid: int | None = None) -> dict[str, Any]:
    """First and last recorded instant (of off-CPU intervals, syscalls and spans), for a default timeline."""
    fp = f" WHERE tgid = {int(pid)}" if pid is not None else ""
    sp = f" WHERE pid = {int(pid)}" if pid is not None else ""
    rows = store.query_rows(
        "SELECT minIf(a, n > 0) AS lo, maxIf(b, n > 0) AS hi, sum(n) AS total FROM ("
        f"SELECT min(ts) AS a, max(end_ts) AS b, count() AS n FROM offcpu{fp} UNION ALL "
        f"SELECT min(ts), max(end_ts), count() FROM syscall{fp} UNION ALL "
        f"SELECT min(ts_ns), max(end_ns), count() FROM spans{sp})")
    r = rows[0] if rows else {}
    n = int(r.get("total") or 0)
    if not n:
        return {"from_ns": None, "to_ns": None, "from": None, "to": None}
    lo, hi = int(r["lo"]), max(int(r["hi"]), int(r["lo"]) + 1)
    return {"from_ns": lo, "to_ns": hi, "from": str(lo), "to": str(hi)}


def _span_match(s: SpanRef, kind: str) -> dict[str, Any]:
    return {"kind": kind, "id": s.span_id, "label": s.head(), "route": f"/incident/span-{s.span_id}",
            "trace_id": s.trace_id, "pid": s.pid}


def search(store: Store, q: str, dmap: DomainMap | None = None) -> dict[str, Any]:
    """What ``q`` names: an incident id, a trace id (32 hex), a span id (16 hex), a pid, a payment or order
    id (by ``dmap``, as `kprobe timeline` finds them), or a value of a span attribute. Each match carries
    the UI route that shows it."""
    text = q.strip()
    if not re.fullmatch(SEARCH_PATTERN, text):
        raise bad_request("q must be 1 to 128 letters, digits or . _ : @ / + = -")
    low = text.lower()
    matches: list[dict[str, Any]] = []
    try:
        kind, _ = parse_incident_id(low)
        matches.append({"kind": "incident", "id": low, "label": f"incident {low}", "route": f"/incident/{low}"})
    except ValueError:
        pass
    if re.fullmatch(r"[0-9a-f]{32}", low):
        try:
            spans = trace_spans(store, low)
            matches.append({"kind": "trace", "id": low, "label": f"trace {low} ({len(spans)} spans)",
                            "route": f"/trace/{low}"})
        except SpanLookupError:
            pass
    if re.fullmatch(r"[0-9a-f]{16}", low):
        try:
            matches.append(_span_match(find_span(store, low), "span"))
        except SpanLookupError:
            pass
    if text.isdigit() and 0 < int(text) < 2**32:
        ext = extent(store, int(text))
        if ext["from"] is not None:
            matches.append({"kind": "pid", "id": text, "label": f"PID {text}",
                            "route": f"/timeline?from={ext['from']}&to={ext['to']}&pid={text}"})
    if not matches or text.isdigit():      # a payment or order id may look like a pid
        lit = "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
        rows = store.query_rows(f"SELECT {SPAN_COLS} FROM spans WHERE position(attributes, {lit}) > 0 "
                                "ORDER BY ts_ns DESC LIMIT 20")
        if rows:     # some span carries the text: is it a payment or an order (kprobe timeline's answer)?
            matches.extend(business_matches(store, dmap, text))
        matches.extend(_span_match(SpanRef.from_row(r), "attribute") for r in rows)
    return {"q": text, "matches": matches}
