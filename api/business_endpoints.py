"""`kprobe why --payment ID` / `--order CLORDID` over HTTP: a business key's events and its kernel root cause.

The answer is what ``kprobe why --payment ID --json`` prints (key, kind, root_cause, incidents, notes,
events), computed by the function that command calls, :func:`kprobe.finance.timeline.build`, with the
domain map it uses ($KPROBE_DOMAIN_MAP, else every span carrying the id in an attribute; a ClOrdID in
``fix.cl_ord_id``). The API adds only what HTTP needs: the events in pages, and where to go next
(``incident_id``: the span the causal engine explained, which /incidents/{id} and the UI open).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from kprobe.api import cursor
from kprobe.api.errors import bad_request, not_found
from kprobe.causal.fetch import Store
from kprobe.finance.domain import DomainMap, load
from kprobe.finance.timeline import Timeline, build, default_map

BusinessKind = Literal["payment", "order"]
KINDS: tuple[BusinessKind, ...] = ("payment", "order")
# payment ids, UETRs, ISO 20022 end-to-end ids, FIX ClOrdIDs as they appear in the wild; anything else
# (spaces, quotes, control characters) is refused before it reaches a query
KEY_PATTERN = r"^[A-Za-z0-9._:@/+=-]{1,128}$"
DOMAIN_MAP_ENV = "KPROBE_DOMAIN_MAP"


def domain_map_from_env() -> DomainMap | None:
    """The domain map the CLI would use ($KPROBE_DOMAIN_MAP), loaded once when the server starts.

    Why at start: a map with a typo then stops `kprobe serve` with the map's own error list
    (:class:`DomainMapError` is a ValueError, which the serve command reports), instead of every
    business request failing later. ``None``: no map, each kind's default applies.
    """
    path = os.environ.get(DOMAIN_MAP_ENV)
    return load(Path(path)) if path else None


def check_key(kind: str, key: str) -> str:
    if not re.fullmatch(KEY_PATTERN, key):
        raise bad_request(f"{kind} must be 1 to 128 letters, digits or . _ : @ / + = - (got {key[:40]!r})")
    return key


def lookup(store: Store, dmap: DomainMap | None, kind: BusinessKind, key: str, *, analyse: bool) -> Timeline:
    """The CLI's timeline of ``key`` (``kprobe timeline --payment/--order``), with or without the analysis."""
    return build(store, dmap or default_map(kind), key, analyse=analyse)


def _cursor_tag(kind: str, key: str) -> str:
    return hashlib.sha256(f"{kind}\0{key}".encode()).hexdigest()[:16]


def why(store: Store, dmap: DomainMap | None, kind: BusinessKind, key: str, limit: int,
        after: str | None) -> dict[str, Any]:
    """``kprobe why --payment/--order KEY --json`` with its events paged (an offset bound to the key).

    404 when no span mentions the key, with the checks the CLI's message suggests.
    """
    check_key(kind, key)
    offset = 0
    if after:
        c = cursor.decode(after, {"o": int, "k": str})
        if c["k"] != _cursor_tag(kind, key):
            raise bad_request("cursor belongs to another payment or order; start again without it")
        offset = c["o"]
    tl = lookup(store, dmap, kind, key, analyse=True)
    if not tl.events:
        raise not_found(f"no spans mention {kind} {key!r}: is the service watched (payload decoding) or exporting "
                        f"OTel spans, is the id right? Search finds partial matches (/search?q=...)")
    events = tl.events[offset:offset + limit]
    more = len(tl.events) > offset + limit
    victim = tl.victim_span_id or None
    return {"key": key, "kind": kind, "root_cause": tl.root_cause, "incidents": tl.incidents, "notes": tl.notes,
            "events": [e.to_json() for e in events], "events_total": len(tl.events),
            "next_cursor": cursor.encode({"o": offset + limit, "k": _cursor_tag(kind, key)}) if more else None,
            "victim_span_id": victim, "incident_id": f"span-{victim}" if victim else None}


def search_matches(store: Store, dmap: DomainMap | None, text: str) -> list[dict[str, Any]]:
    """``text`` as a payment and as an order id, each with the UI route of its why view.

    A ClOrdID is also a payment id to the default map (any attribute carrying it); when both name the
    same spans only the order is offered, the more specific meaning.
    """
    if not re.fullmatch(KEY_PATTERN, text):
        return []
    found = {k: lookup(store, dmap, k, text, analyse=False) for k in KINDS}
    spans = {k: {e.span_id for e in tl.events if e.span_id} for k, tl in found.items()}
    out = []
    for k, tl in found.items():
        if not tl.events or (k == "payment" and spans["order"] and spans["payment"] <= spans["order"]):
            continue
        services = sorted({e.service for e in tl.events if e.service})
        out.append({"kind": k, "id": text, "route": f"/{k}/{quote(text, safe='')}",
                    "label": f"{k} {text}: {len(tl.events)} event{'s' if len(tl.events) != 1 else ''}" + (f" ({', '.join(services)})" if services
                                                                        else "")})
    return out
