"""A business key's timeline: its events across services in time order, with gaps, the settlement
window each races, and the kernel root cause inserted where it struck.

Input is the store (``query_rows``), output plain data (:class:`Timeline`) that the CLI renders
(``kprobe timeline --payment``) or dumps as JSON. Steps:

1. spans mentioning the key (prefiltered in SQL on the text, then classified by the domain map
   and kept only if the rule's key *is* the key), and every span of the traces they belong to
   that the domain map classifies (a settlement call's server side has no payment id, but it is
   in the payment's trace, decoded or OTLP);
2. ledger writes: for each file rule (``match.path``), the fsync/fdatasync/write rows of the
   services in the timeline on descriptors opened on a matching path, inside the timeline's span
   of time: "write initiated" at the call's entry, "completed" at its exit;
3. the root cause: the causal engine (:func:`kprobe.causal.span_chain.why_span`) on the failed (else
   the longest) span; its root cause is inserted at the start of the event it delayed;
4. windows: each event whose rule names a window is placed (:meth:`Window.locate`); one that
   ended past the cut-off it started before is an incident naming the window, the slack it had
   and the overrun.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from .domain import DomainMap, EventRule

__all__ = ["Timeline", "TimelineEvent", "build", "render", "default_map"]

_SPAN_COLS = ("ts_ns, end_ns, trace_id, span_id, parent_span_id, name, kind, service, host, pid, tid, "
              "status_code, status_message, attributes")


class Store(Protocol):
    def query_rows(self, sql: str) -> list[dict]: ...


@dataclass
class TimelineEvent:
    ts_ns: int
    end_ns: int
    label: str
    service: str
    kind: str  #: a domain-map kind, or "kernel" for the root cause
    pid: int = 0
    error: bool = False
    detail: str = ""
    placement: dict[str, Any] | None = None
    span_id: str = ""
    window: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"ts_ns": self.ts_ns, "end_ns": self.end_ns, "label": self.label, "service": self.service,
                "kind": self.kind, "pid": self.pid, "error": self.error, "detail": self.detail,
                "window": self.placement, "span_id": self.span_id}


@dataclass
class Timeline:
    key: str
    events: list[TimelineEvent] = field(default_factory=list)
    root_cause: str = ""
    root_phrase: str = ""
    incidents: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: the span the causal engine was asked about (the failed, else the longest, classified span): lets a
    #: caller open its incident (``kprobe why --span``, the API's /incidents/span-ID). Not in ``to_json``.
    victim_span_id: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "events": [e.to_json() for e in self.events], "root_cause": self.root_cause,
                "incidents": self.incidents, "notes": self.notes}


def default_map(kind: str) -> DomainMap:
    """Without a domain map: every span carrying the key in a usual key attribute is an event."""
    from .domain import parse

    key = "fix.cl_ord_id" if kind == "order" else "*"
    return parse({"events": [{"name": "{span}", "kind": "custom", "match": {"name": "*"}, "key": key}]})


def _sql_text(s: str) -> str:
    return s.replace("\\", "\\\\").replace("'", "\\'")


def _key_matches(rule: EventRule, attrs: dict[str, Any], key: str) -> bool:
    if rule.key_attr == "*":
        return any(str(v) == key for k, v in attrs.items() if not k.startswith("@"))
    return rule.key_of(attrs) == key


def build(store: Store, dmap: DomainMap, key: str, *, analyse: bool = True) -> Timeline:
    tl = Timeline(key)
    rows = store.query_rows(f"SELECT {_SPAN_COLS} FROM spans WHERE position(attributes, '{_sql_text(key)}') > 0 "
                            f"OR position(name, '{_sql_text(key)}') > 0 ORDER BY ts_ns LIMIT 10000")
    keyed = []
    for r in rows:
        attrs = _attrs(r)
        rule = dmap.classify(r, attrs)
        if rule is not None and _key_matches(rule, attrs, key):
            keyed.append((r, attrs, rule))
    if not keyed:
        return tl
    traces = sorted({str(r["trace_id"]) for r, _, _ in keyed if r["trace_id"]})
    seen = {str(r["span_id"]) for r, _, _ in keyed}
    if traces:
        in_list = ", ".join(f"'{_sql_text(t)}'" for t in traces[:200])
        for r in store.query_rows(f"SELECT {_SPAN_COLS} FROM spans WHERE trace_id IN ({in_list}) ORDER BY ts_ns"):
            if str(r["span_id"]) in seen:
                continue
            attrs = _attrs(r)
            rule = dmap.classify(r, attrs)
            if rule is not None:
                keyed.append((r, attrs, rule))
                seen.add(str(r["span_id"]))
    keyed, merged = _merge_duplicates(keyed)
    if merged:
        tl.notes.append(f"{merged} decoded span(s) merged into the OTel span(s) of the same request")
    spans = []
    for r, attrs, rule in keyed:
        label = rule.name.replace("{span}", str(r["name"]))
        ev = TimelineEvent(int(r["ts_ns"]), int(r["end_ns"]), label, str(r["service"]), rule.kind, int(r["pid"]),
                           int(r["status_code"]) == 2, _detail(r, attrs), span_id=str(r["span_id"]))
        ev.window = rule.window
        tl.events.append(ev)
        spans.append(r)
    tl.events += _ledger_writes(store, dmap, tl.events)
    anchor = min(e.ts_ns for e in tl.events)
    for ev in tl.events:  # every event races the cut-off the flow was racing when it began
        if ev.window and ev.window in dmap.windows:
            ev.placement = dmap.windows[ev.window].place(anchor, ev.ts_ns, ev.end_ns).as_dict()
    tl.events.sort(key=lambda e: (e.ts_ns, e.end_ns))
    if analyse:
        _root_cause(store, tl, spans)
    for e in tl.events:
        if e.placement and e.placement["missed"]:
            tl.incidents.append(
                f"{e.label} ({e.service}) missed the {e.placement['window']} {e.placement['cutoff']} cut-off of "
                f"value date {e.placement['value_date']}: it had {_dur(e.placement['slack_ns'])} of slack when it "
                f"started and ended {_dur(e.placement['overrun_ns'])} past the cut-off"
                + (f"; kernel root cause: {tl.root_phrase}" if tl.root_phrase else ""))
    return tl


def _merge_duplicates(keyed: list) -> tuple[list, int]:
    """A request seen twice - exported by its service over OTLP and decoded from its socket - is one
    event: the decoded span is dropped when an OTel span of the same process and kind covers most
    of it (the OTel span names the operation as its developers do; the decoded one only adds what
    the wire said)."""
    otel = [(r, a) for r, a, _ in keyed if a.get("@source") != "kprobe.decoded"]
    out, merged = [], 0
    for r, attrs, rule in keyed:
        if attrs.get("@source") == "kprobe.decoded":
            s, e = int(r["ts_ns"]), int(r["end_ns"])
            for o, _ in otel:
                if int(o["pid"]) != int(r["pid"]) or int(o["kind"]) != int(r["kind"]):
                    continue
                overlap = min(e, int(o["end_ns"])) - max(s, int(o["ts_ns"]))
                if overlap >= 0.5 * max(e - s, 1):
                    merged += 1
                    break
            else:
                out.append((r, attrs, rule))
            continue
        out.append((r, attrs, rule))
    return out, merged


def _attrs(r: dict[str, Any]) -> dict[str, Any]:
    try:
        a = json.loads(r.get("attributes") or "{}")
    except ValueError:
        return {}
    return a if isinstance(a, dict) else {}


def _detail(r: dict[str, Any], attrs: dict[str, Any]) -> str:
    parts = [str(r["name"])]
    for k in ("http.status_code", "db.pg.sqlstate", "fix.exec_type", "iso8583.response_code", "iso20022.status"):
        if k in attrs:
            parts.append(f"{k.split('.')[-1]}={attrs[k]}")
    if r.get("status_message"):
        parts.append(str(r["status_message"]))
    return " ".join(parts)


def _ledger_writes(store: Store, dmap: DomainMap, events: list[TimelineEvent]) -> list[TimelineEvent]:
    """Writes and syncs on a rule's path by the processes of the timeline, while they were
    handling this flow (inside one of their events' intervals: another payment's writes are not
    this one's)."""
    out: list[TimelineEvent] = []
    for rule in dmap.file_rules():
        mine = [e for e in events if e.pid > 0 and fnmatch.fnmatchcase(e.service, str(rule.match.get("service", "*")))]
        if not mine:
            continue
        pid_list = ", ".join(sorted({str(e.pid) for e in mine}))
        lo, hi = min(e.ts_ns for e in mine), max(e.end_ns for e in mine)
        try:
            opens = store.query_rows(f"SELECT tgid, fd, path, ts FROM fd_open WHERE tgid IN ({pid_list}) "
                                     f"AND ts <= {hi} ORDER BY ts")
            calls = store.query_rows(
                f"SELECT tgid, tid, fd, syscall, ts, end_ts, dur_ns FROM syscall WHERE tgid IN ({pid_list}) "
                f"AND ts >= {lo} AND ts <= {hi} AND syscall IN ('fsync', 'fdatasync', 'write', 'pwrite64', "
                f"'sync_file_range') ORDER BY ts")
        except Exception as e:  # a store without kernel tables (spans only): say so, keep the spans
            out.append(TimelineEvent(lo, lo, f"ledger writes not available: {e}", "", "note"))
            continue
        paths: dict[tuple[int, int], list[tuple[int, str]]] = {}
        for o in opens:
            paths.setdefault((int(o["tgid"]), int(o["fd"])), []).append((int(o["ts"]), str(o["path"])))
        for c in calls:
            pid, ts = int(c["tgid"]), int(c["ts"])
            owner = next((e for e in mine if e.pid == pid and e.ts_ns <= ts <= e.end_ns), None)
            if owner is None:
                continue
            cands = [p for t, p in paths.get((pid, int(c["fd"])), []) if t <= ts]
            if not cands or not fnmatch.fnmatchcase(cands[-1], str(rule.match["path"])):
                continue
            ev = TimelineEvent(ts, int(c["end_ts"]), f"{rule.name} ({c['syscall']})", owner.service, rule.kind,
                               pid, detail=f"{c['syscall']} fd={c['fd']} {cands[-1]}")
            ev.window = rule.window
            out.append(ev)
    return out


def _root_cause(store: Store, tl: Timeline, spans: list[dict[str, Any]]) -> None:
    from kprobe.causal.span_chain import SpanLookupError, SpanRef, why_span
    from kprobe.causal.why import NoDataError, phrase

    victims = [r for r in spans if int(r["status_code"]) == 2] or spans
    victim = max(victims, key=lambda r: int(r["end_ns"]) - int(r["ts_ns"]))
    ref = SpanRef(str(victim["span_id"]), str(victim["trace_id"]), str(victim["parent_span_id"]), str(victim["name"]),
                  str(victim["service"]), str(victim["host"]), int(victim["pid"]), int(victim["tid"]),
                  int(victim["ts_ns"]), int(victim["end_ns"]), int(victim["status_code"]), str(victim["status_message"]))
    tl.victim_span_id = ref.span_id
    try:
        sa = why_span(store, ref)
    except (SpanLookupError, NoDataError, ValueError) as e:
        tl.notes.append(f"no kernel analysis: {e}")
        return
    a = sa.analysis
    if a.root_cause is None:
        tl.notes.append(f"no kernel delay found for {ref.head()}")
        return
    tl.root_cause = " ← ".join([ref.head()] + [phrase(c) for c in a.chain])
    rc = a.root_cause
    # where it struck: the deepest timeline event inside the victim's window that it delayed
    inside = [e for e in tl.events if e.ts_ns >= ref.start_ns and e.end_ns <= ref.end_ns and e.span_id != ref.span_id]
    at = max(inside, key=lambda e: e.end_ns - e.ts_ns) if inside else None
    ts = (at.ts_ns + 1) if at else ref.start_ns + 1
    tl.events.append(TimelineEvent(ts, ts + int(rc.delay_ns), f"{rc.kind.replace('_', ' ')} — kernel",
                                   rc.culprit.label(), "kernel", rc.culprit.pid or 0, detail=phrase(rc)))
    tl.events.sort(key=lambda e: (e.ts_ns, e.end_ns))
    tl.root_phrase = phrase(rc)


def _dur(ns: int) -> str:
    ns = int(ns)
    if abs(ns) >= 1_000_000_000:
        return f"{ns / 1e9:.3f} s"
    if abs(ns) >= 1_000_000:
        return f"{ns / 1e6:.1f} ms"
    return f"{ns / 1e3:.0f} µs"


def _clock(ns: int) -> str:
    return datetime.fromtimestamp(ns // 1_000_000_000, tz=UTC).strftime("%H:%M:%S") + f".{ns % 1_000_000_000 // 1000:06d}"


def render(tl: Timeline, title: str) -> str:
    """The seed's timeline: one line per event (service, time to the µs), the gap from the
    previous event, its duration, its window, and the kernel root cause where it struck."""
    if not tl.events:
        return f"{title}: no spans mention {tl.key!r} (is the service watched or exporting OTel, is the key right?)"
    lines = [f"{title} — {len(tl.events)} events, {_dur(max(e.end_ns for e in tl.events) - tl.events[0].ts_ns)}"]
    prev = None
    for e in tl.events:
        gap = "" if prev is None else f"  +{_dur(e.ts_ns - prev)}"
        dur = f"  {_dur(e.end_ns - e.ts_ns)}" if e.end_ns > e.ts_ns else ""
        flag = "  [ROOT CAUSE]" if e.kind == "kernel" else ("  ERROR" if e.error else "")
        lines.append(f"{_clock(e.ts_ns)}  {e.label:<34} {e.service or '-'}{dur}{gap}{flag}")
        if e.detail and e.kind != "kernel":
            lines.append(f"{'':17}{e.detail}")
        elif e.kind == "kernel":
            lines.append(f"{'':17}{e.detail}")
        if e.placement:
            p = e.placement
            state = f"MISSED by {_dur(p['overrun_ns'])}" if p["missed"] else f"slack {_dur(p['slack_ns'])}"
            lines.append(f"{'':17}window {p['window']} ({p['cutoff']}), value date {p['value_date']}: {state}")
        prev = e.ts_ns
    if tl.root_cause:
        lines += ["", "root cause: " + tl.root_cause]
    for i in tl.incidents:
        lines.append("INCIDENT: " + i)
    for n in tl.notes:
        lines.append("note: " + n)
    return "\n".join(lines)
