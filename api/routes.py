"""The API's endpoints as one table: path, parameters, handler, response schema.

The server dispatches from this table and the OpenAPI document is generated from it, so an
endpoint cannot be served without being documented, nor documented with other parameters.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kprobe.api import business_endpoints as be
from kprobe.api import causal_endpoints as ce
from kprobe.api import data_endpoints as de
from kprobe.api.errors import bad_request
from kprobe.api.params import Param
from kprobe.api.timeline_levels import Levels
from kprobe.api.timeline_lod import KIND_NAMES, Window, timeline
from kprobe.causal.records import Store
from kprobe.finance.domain import DomainMap
from kprobe.schemas.tables import BY_NAME

PREFIX = "/api/v1"
MAX_WINDOW_NS = 7 * 24 * 3600 * 1_000_000_000
MIN_WINDOW_NS = 100


@dataclass(frozen=True)
class Context:
    store: Store
    data_dir: Path
    # the business domain map (which span is which payment/order event): the CLI's, from $KPROBE_DOMAIN_MAP
    domain_map: DomainMap | None = field(default_factory=be.domain_map_from_env)
    # the timeline's level-of-detail cells of this store, built on the first view of a closed partition
    levels: Levels | None = None

    def __post_init__(self) -> None:
        if self.levels is None:
            object.__setattr__(self, "levels", Levels(self.store))


Handler = Callable[[Context, dict[str, Any], dict[str, str]], dict[str, Any]]


@dataclass(frozen=True)
class Route:
    path: str                      # OpenAPI template, e.g. /incidents/{id}
    handler: Handler
    summary: str
    response: str                  # components/schemas name
    params: tuple[Param, ...] = ()
    path_params: tuple[tuple[str, str], ...] = ()   # (name, regex) of each {name}
    not_found: bool = False        # may answer 404

    def pattern(self) -> re.Pattern[str]:
        rx = re.escape(PREFIX + self.path)
        for name, _ in self.path_params:
            rx = rx.replace(re.escape("{" + name + "}"), f"(?P<{name}>[^/]+)")
        return re.compile(f"^{rx}$")


def _limit(default: int, maximum: int) -> Param:
    return Param("limit", "int", f"items per page (at most {maximum})", default=default, minimum=1, maximum=maximum)


CURSOR = Param("cursor", "cursor", "next_cursor of the previous page")
FROM = Param("from", "ts", "window start: UTC ns since the epoch or ISO-8601")
TO = Param("to", "ts", "window end: UTC ns since the epoch or ISO-8601")
PID = Param("pid", "int", "process id (tgid)", minimum=1, maximum=4_194_304)


def _window(args: dict[str, Any], required: bool) -> tuple[int | None, int | None]:
    lo, hi = args.get("from"), args.get("to")
    if required and (lo is None or hi is None):
        raise bad_request("from and to are required")
    if lo is not None and hi is not None:
        if hi < lo:
            raise bad_request("to must not be before from")
        if hi - lo > MAX_WINDOW_NS:
            raise bad_request("the window is longer than 7 days; narrow it")
    return lo, hi


def _incidents(ctx: Context, a: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    return ce.list_incidents(ctx.store, a["slow_ms"], a["limit"], a["cursor"])


def _incident(ctx: Context, _: dict[str, Any], p: dict[str, str]) -> dict[str, Any]:
    return ce.incident(ctx.store, p["id"])


def _why(ctx: Context, a: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    return ce.analyse(ctx.store, ce.why_target(a))


def _why_business(ctx: Context, a: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    chosen = [k for k in be.KINDS if a.get(k) is not None]
    if len(chosen) != 1:
        raise bad_request("give exactly one of payment or order")
    kind = chosen[0]
    return be.why(ctx.store, ctx.domain_map, kind, a[kind], a["limit"], a["cursor"])


def _trace(ctx: Context, _: dict[str, Any], p: dict[str, str]) -> dict[str, Any]:
    return ce.trace(ctx.store, p["trace_id"])


def _spans(ctx: Context, a: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    _window(a, False)
    return ce.list_spans(ctx.store, a)


def _events(ctx: Context, a: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    _window(a, False)
    return de.list_events(ctx.store, a)


def _processes(ctx: Context, a: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    return de.list_processes(ctx.store, a)


def _stats(ctx: Context, _a: dict[str, Any], _p: dict[str, str]) -> dict[str, Any]:
    return de.stats(ctx.store, ctx.data_dir)


def _extent(ctx: Context, a: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    return de.extent(ctx.store, a.get("pid"))


def _search(ctx: Context, a: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    return de.search(ctx.store, a["q"], ctx.domain_map)


def _timeline(ctx: Context, a: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    lo, hi = _window(a, True)
    assert lo is not None and hi is not None
    if hi - lo < MIN_WINDOW_NS:
        raise bad_request(f"the window must be at least {MIN_WINDOW_NS} ns")
    pids = tuple(sorted(set(parse_pids(a.get("pid")))))
    kinds = tuple(a["types"]) if a.get("types") else KIND_NAMES
    return timeline(ctx.store, Window(lo, hi, a["width"], pids, kinds), ctx.levels)


ROUTES: tuple[Route, ...] = (
    Route("/incidents", _incidents, "Failed or slow operations, newest first (kprobe incidents)", "IncidentPage",
          (Param("slow_ms", "int", "slowness threshold in ms", default=500, minimum=1, maximum=3_600_000),
           _limit(50, 200), CURSOR)),
    Route("/incidents/{id}", _incident, "One incident explained down to its kernel root cause (kprobe why "
          "--incident)", "Analysis", path_params=(("id", r"^(span-[0-9a-f]{16}|k-[0-9]{1,10}-[0-9]{1,10}-"
                                                        r"[0-9]{1,19}-[0-9]{1,19})$"),), not_found=True),
    Route("/why", _why, "Root cause of a span, a trace, an incident or a pid over a window (kprobe why)",
          "Analysis",
          (Param("span", "hex16", "span id"), Param("trace", "hex32", "trace id"),
           Param("incident", "str", "incident id from /incidents", max_length=80), PID,
           Param("tid", "int", "with pid: thread id", minimum=1, maximum=4_194_304), FROM, TO), not_found=True),
    Route("/why/business", _why_business, "A payment's or order's business events and their kernel root cause "
          "(kprobe why --payment ID / --order CLORDID)", "BusinessWhy",
          (Param("payment", "str", "payment id, UETR or end-to-end id (as a span attribute carries it)",
                 max_length=128, pattern=be.KEY_PATTERN),
           Param("order", "str", "FIX ClOrdID", max_length=128, pattern=be.KEY_PATTERN),
           _limit(500, 2000), CURSOR), not_found=True),
    Route("/traces/{trace_id}", _trace, "A trace's spans and the one worth explaining", "Trace",
          path_params=(("trace_id", r"^[0-9a-fA-F]{32}$"),), not_found=True),
    Route("/spans", _spans, "Spans by trace, service, pid, status and window, oldest first", "SpanPage",
          (Param("trace_id", "hex32", "trace id"),
           Param("service", "str", "service.name", max_length=128), PID,
           Param("status", "enum", "only failed spans, or any", default="any", enum=("any", "error")),
           FROM, TO, _limit(100, 1000), CURSOR)),
    Route("/events", _events, "Recorded kernel events in time order (kprobe events)", "EventPage",
          (PID, Param("type", "enum_list", "event types", enum=tuple(BY_NAME)), FROM, TO,
           Param("detail", "enum", "every column, or the one-line summary", default="full",
                 enum=("full", "summary")), _limit(100, 1000), CURSOR)),
    Route("/processes", _processes, "Processes the recorder identified", "ProcessPage",
          (PID, _limit(100, 1000), CURSOR)),
    Route("/stats", _stats, "Counts, drops, attach status, clock (kprobe stats --json)", "Stats"),
    Route("/extent", _extent, "First and last recorded instant (optionally of one process)", "Extent", (PID,)),
    Route("/search", _search, "Find an incident, trace, span, pid or span attribute value (payment/order id)",
          "SearchResult", (Param("q", "str", "what to look for", required=True, max_length=128,
                                 pattern=de.SEARCH_PATTERN),)),
    Route("/timeline", _timeline, "Lanes per thread with drawable slices and per-pixel sums at any zoom",
          "Timeline",
          (Param("from", "ts", "window start", required=True), Param("to", "ts", "window end", required=True),
           Param("width", "int", "pixels (buckets) across the window", default=1200, minimum=100, maximum=4000),
           Param("pid", "str", "comma-separated process ids (default: the busiest threads)", max_length=200,
                 pattern=r"^[0-9]{1,7}(,[0-9]{1,7}){0,15}$"),
           Param("types", "enum_list", "event kinds to draw", enum=KIND_NAMES))),
)


def parse_pids(raw: str | None) -> list[int]:
    if raw is None:
        return []
    parts = raw.split(",")
    if len(parts) > 16 or not all(re.fullmatch(r"[0-9]{1,7}", p) and 0 < int(p) <= 4_194_304 for p in parts):
        raise bad_request("pid must be up to 16 comma-separated process ids")
    return [int(p) for p in parts]


def match(path: str) -> tuple[Route, dict[str, str]] | None:
    """The route serving ``path`` and its path parameters (validated against their patterns)."""
    for r in ROUTES:
        m = r.pattern().match(path)
        if m:
            got = m.groupdict()
            for name, rx in r.path_params:
                if not re.fullmatch(rx, got[name]):
                    raise bad_request(f"{name} {got[name][:80]!r} does not match {rx}")
            return r, got
        continue
    return None
