"""The domain map: one YAML file saying which traffic and files are which business events.

Why a file and not code: the same kprobe runs at a card acquirer, a broker and a bank; what
``POST /payments`` or a FIX NewOrderSingle *means* there, and which field names the payment, is
the operator's knowledge. The map is validated as a whole when it is loaded and every problem is
reported with its place in the file (``events[2].match.protocol: unknown protocol 'fixx'``), so a
typo fails at start-up, not silently at the incident.

Example (``finance/domain-map.example.yaml`` documents every field)::

    version: 1
    ports: {5432: postgresql, 9878: fix, 8583: iso8583}     # server port -> protocol
    calendars:
      ledger-days: {base: england-wales, holidays: [2026-12-31]}
    windows:
      fedwire: {preset: fedwire}
      ledger-eod: {timezone: Europe/London, calendar: ledger-days, cutoffs: {end of day: "16:30"}}
    events:
      - name: Payment received
        kind: payment_received
        match: {service: payment-handler, method: POST, route: "/payments*"}
        key: body.payment_id
        window: fedwire
      - name: Settlement write
        kind: ledger_write
        match: {service: settlement-svc, path: "/var/lib/ledger/*"}
        window: ledger-eod
      - name: Order
        kind: order_new
        match: {protocol: fix, message: NewOrderSingle}
        key: fix.cl_ord_id

``key`` names the span attribute holding the business key; ``attr ~ regex`` takes the regex's
first group from it (``http.target ~ /payments/([^/]+)``).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from datetime import date, time
from pathlib import Path
from typing import Any

from kprobe.protocols import DECODERS

from .calendars import CALENDARS, Calendar
from .windows import PRESETS, Window

__all__ = ["DomainMap", "DomainMapError", "EventRule", "KINDS", "load", "parse"]

#: Business event kinds the timeline and the CLI know how to read.
KINDS = frozenset({
    "payment_received", "risk_check", "settlement_instruction", "settlement_write", "ledger_write",
    "payment_completed", "payment_failed", "order_new", "order_ack", "order_fill", "order_cancel",
    "order_replace", "order_reject", "custom",
})
MATCH_KEYS = frozenset({"service", "protocol", "name", "method", "route", "message", "status", "path", "source",
                        "attributes"})
_WEEKDAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}
_SOURCES = frozenset({"otlp", "decoded", "any"})


class DomainMapError(ValueError):
    """Every problem found in a domain map, each with its place in the file."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s) in the domain map:\n  " + "\n  ".join(problems))


@dataclass(frozen=True)
class EventRule:
    name: str
    kind: str
    match: dict[str, Any]
    key_attr: str = ""
    key_regex: re.Pattern[str] | None = None
    window: str = ""

    def matches(self, span: dict[str, Any], attrs: dict[str, Any]) -> bool:
        """Whether a span row (with its decoded ``attributes``) is this business event."""
        m = self.match
        source = "decoded" if attrs.get("@source") == "kprobe.decoded" else "otlp"
        checks: list[tuple[str, object]] = [
            ("service", span.get("service", "")),
            ("protocol", attrs.get("protocol", "")),
            ("name", span.get("name", "")),
            ("method", attrs.get("http.method", attrs.get("http.request.method", ""))),
            ("route", attrs.get("http.route", attrs.get("url.path", attrs.get("http.target", "")))),
            ("message", _message(span, attrs)),
            ("status", "error" if int(span.get("status_code", 0)) == 2 else "ok"),
        ]
        for key, value in checks:
            if key in m and not fnmatch.fnmatchcase(str(value), str(m[key])):
                return False
        if "source" in m and m["source"] != "any" and m["source"] != source:
            return False
        if "path" in m:
            return False  # file rules match kernel rows (ledger writes), not spans
        for k, v in m.get("attributes", {}).items():
            if not fnmatch.fnmatchcase(str(attrs.get(k, "")), str(v)):
                return False
        return True

    def key_of(self, attrs: dict[str, Any]) -> str:
        if not self.key_attr:
            return ""
        value = attrs.get(self.key_attr)
        if value is None:
            return ""
        text = str(value)
        if self.key_regex is not None:
            m = self.key_regex.search(text)
            return m.group(1) if m else ""
        return text


def _message(span: dict[str, Any], attrs: dict[str, Any]) -> str:
    for k in ("iso20022.type", "iso8583.mti"):
        if k in attrs:
            return str(attrs[k])
    if attrs.get("protocol") == "fix":
        return str(span.get("name", ""))  # NewOrderSingle, ExecutionReport Trade...
    return ""


@dataclass(frozen=True)
class DomainMap:
    events: tuple[EventRule, ...] = ()
    windows: dict[str, Window] = field(default_factory=dict)
    ports: dict[int, str] = field(default_factory=dict)

    def classify(self, span: dict[str, Any], attrs: dict[str, Any]) -> EventRule | None:
        """The first rule a span matches (rules are tried in file order), or None."""
        for rule in self.events:
            if rule.matches(span, attrs):
                return rule
        return None

    def file_rules(self) -> list[EventRule]:
        return [r for r in self.events if "path" in r.match]


def load(path: Path) -> DomainMap:
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as e:
        raise DomainMapError(str(path), [f"cannot read: {e.strerror}"]) from None
    except yaml.YAMLError as e:
        raise DomainMapError(str(path), [f"not valid YAML: {e}"]) from None
    return parse(doc, str(path))


def parse(doc: Any, source: str = "<domain map>") -> DomainMap:
    """Validate a loaded YAML document; raise :class:`DomainMapError` listing every problem."""
    problems: list[str] = []
    if not isinstance(doc, dict):
        raise DomainMapError(source, ["the top level must be a mapping (version, ports, calendars, windows, events)"])
    unknown = set(doc) - {"version", "ports", "calendars", "windows", "events"}
    if unknown:
        problems.append(f"unknown top-level key(s): {', '.join(sorted(map(str, unknown)))}")
    if doc.get("version", 1) != 1:
        problems.append(f"version: {doc.get('version')!r} is not supported (1 is)")
    ports: dict[int, str] = {}
    for port, proto in (doc.get("ports") or {}).items():
        if not isinstance(port, int) or not 0 < port < 65536:
            problems.append(f"ports.{port}: a TCP port number (1-65535) is needed")
        elif proto not in DECODERS:
            problems.append(f"ports.{port}: unknown protocol {proto!r} (known: {', '.join(sorted(DECODERS))})")
        else:
            ports[port] = proto
    calendars = dict(CALENDARS)
    for name, spec in (doc.get("calendars") or {}).items():
        where = f"calendars.{name}"
        cal = _calendar(where, name, spec, problems)
        if cal is not None:
            calendars[name] = cal
    windows: dict[str, Window] = {}
    for name, spec in (doc.get("windows") or {}).items():
        w = _window(f"windows.{name}", str(name), spec, calendars, problems)
        if w is not None:
            windows[str(name)] = w
    events: list[EventRule] = []
    raw_events = doc.get("events") or []
    if not isinstance(raw_events, list):
        problems.append("events: a list of event rules is needed")
        raw_events = []
    for i, spec in enumerate(raw_events):
        rule = _event(f"events[{i}]", spec, windows, problems)
        if rule is not None:
            events.append(rule)
    if problems:
        raise DomainMapError(source, problems)
    return DomainMap(tuple(events), windows, ports)


def _calendar(where: str, name: str, spec: Any, problems: list[str]) -> Calendar | None:
    if not isinstance(spec, dict):
        problems.append(f"{where}: a mapping (base, holidays, open_days, weekend) is needed")
        return None
    bad = set(spec) - {"base", "holidays", "open_days", "weekend"}
    if bad:
        problems.append(f"{where}: unknown key(s) {', '.join(sorted(bad))}")
    base_name = spec.get("base", "weekdays")
    base = CALENDARS.get(base_name)
    if base is None:
        problems.append(f"{where}.base: unknown calendar {base_name!r} (built in: {', '.join(sorted(CALENDARS))})")
        return None
    dates: dict[str, list[date]] = {}
    for key in ("holidays", "open_days"):
        dates[key] = []
        for j, d in enumerate(spec.get(key) or []):
            if isinstance(d, date):
                dates[key].append(d)
            else:
                try:
                    dates[key].append(date.fromisoformat(str(d)))
                except ValueError:
                    problems.append(f"{where}.{key}[{j}]: {d!r} is not a date (YYYY-MM-DD)")
    weekend = None
    if "weekend" in spec:
        weekend = []
        for d in spec["weekend"] or []:
            if str(d).lower()[:3] not in _WEEKDAYS:
                problems.append(f"{where}.weekend: {d!r} is not a weekday name")
            else:
                weekend.append(_WEEKDAYS[str(d).lower()[:3]])
    return base.with_extra(dates["holidays"], dates["open_days"], weekend, name=name)


def _time(value: Any) -> time:
    if isinstance(value, int) and not isinstance(value, bool):  # YAML 1.1 reads 16:30 as sexagesimal 990
        return time(value // 60, value % 60)
    return time.fromisoformat(str(value))


def _window(where: str, name: str, spec: Any, calendars: dict[str, Calendar], problems: list[str]) -> Window | None:
    if not isinstance(spec, dict):
        problems.append(f"{where}: a mapping (preset, or timezone + calendar + cutoffs) is needed")
        return None
    bad = set(spec) - {"preset", "timezone", "calendar", "cutoffs"}
    if bad:
        problems.append(f"{where}: unknown key(s) {', '.join(sorted(bad))}")
    base: Window | None = None
    if "preset" in spec:
        base = PRESETS.get(spec["preset"])
        if base is None:
            problems.append(f"{where}.preset: unknown preset {spec['preset']!r} (presets: {', '.join(sorted(PRESETS))})")
            return None
    tz = spec.get("timezone", base.timezone if base else None)
    cal_name = spec.get("calendar")
    cal = calendars.get(cal_name) if cal_name else (base.calendar if base else calendars["weekdays"])
    if cal is None:
        problems.append(f"{where}.calendar: unknown calendar {cal_name!r} (defined: {', '.join(sorted(calendars))})")
        return None
    cutoffs = base.cutoffs if base else ()
    if "cutoffs" in spec:
        if not isinstance(spec["cutoffs"], dict) or not spec["cutoffs"]:
            problems.append(f"{where}.cutoffs: a mapping of cut-off name -> local time (HH:MM) is needed")
            return None
        parsed = []
        for cname, value in spec["cutoffs"].items():
            try:
                parsed.append((str(cname), _time(value)))
            except ValueError:
                problems.append(f"{where}.cutoffs.{cname}: {value!r} is not a time of day (HH:MM)")
        cutoffs = tuple(sorted(parsed, key=lambda c: c[1]))
    if tz is None:
        problems.append(f"{where}.timezone: needed (an IANA zone such as Europe/London) unless a preset gives it")
        return None
    try:
        return Window(name, str(tz), cal, cutoffs)
    except Exception as e:  # ZoneInfoNotFoundError, ValueError
        problems.append(f"{where}: {e if str(e) else type(e).__name__} (timezone {tz!r})")
        return None


def _event(where: str, spec: Any, windows: dict[str, Window], problems: list[str]) -> EventRule | None:
    if not isinstance(spec, dict):
        problems.append(f"{where}: a mapping (name, kind, match, key, window) is needed")
        return None
    n0 = len(problems)
    bad = set(spec) - {"name", "kind", "match", "key", "window"}
    if bad:
        problems.append(f"{where}: unknown key(s) {', '.join(sorted(bad))}")
    name = spec.get("name")
    if not name or not isinstance(name, str):
        problems.append(f"{where}.name: a display name is needed")
    kind = spec.get("kind", "custom")
    if kind not in KINDS:
        problems.append(f"{where}.kind: unknown kind {kind!r} (known: {', '.join(sorted(KINDS))})")
    match = spec.get("match")
    if not isinstance(match, dict) or not match:
        problems.append(f"{where}.match: a mapping of conditions is needed ({', '.join(sorted(MATCH_KEYS))})")
        match = {}
    for k, v in match.items():
        if k not in MATCH_KEYS:
            problems.append(f"{where}.match.{k}: unknown condition (known: {', '.join(sorted(MATCH_KEYS))})")
        elif k == "protocol" and v not in DECODERS and v != "otlp":
            problems.append(f"{where}.match.protocol: unknown protocol {v!r} (known: {', '.join(sorted(DECODERS))})")
        elif k == "source" and v not in _SOURCES:
            problems.append(f"{where}.match.source: {v!r} is not one of {', '.join(sorted(_SOURCES))}")
        elif k == "status" and v not in ("ok", "error"):
            problems.append(f"{where}.match.status: {v!r} is not ok or error")
        elif k == "attributes" and not isinstance(v, dict):
            problems.append(f"{where}.match.attributes: a mapping of attribute -> pattern is needed")
    key_attr, key_regex = "", None
    key = spec.get("key", "")
    if key:
        attr, sep, rx = str(key).partition("~")
        key_attr = attr.strip()
        if sep:
            try:
                key_regex = re.compile(rx.strip())
                if key_regex.groups < 1:
                    problems.append(f"{where}.key: the regex needs a group for the key: {rx.strip()!r}")
            except re.error as e:
                problems.append(f"{where}.key: bad regex {rx.strip()!r}: {e}")
    window = spec.get("window", "")
    if window and window not in windows:
        problems.append(f"{where}.window: unknown window {window!r} (defined: {', '.join(sorted(windows)) or 'none'})")
    if len(problems) > n0:
        return None
    return EventRule(str(name), str(kind), dict(match), key_attr, key_regex, str(window or ""))
