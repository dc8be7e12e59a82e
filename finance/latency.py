"""``kprobe latency``: order-to-ack and cancel-to-ack per FIX session and counterparty, query
p50/p99 per statement shape, request latency per HTTP route and per ISO message, all from decoded
spans (no instrumentation).

Percentiles are computed here over the durations (numpy, linear interpolation), not in SQL, so
the same code answers over a local store and through the recorder's socket. FIX resends
(PossDup) and other exchanges the decoders mark ``kprobe.latency_excluded`` are left out and
counted in ``excluded``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

__all__ = ["LatencyRow", "collect", "render"]

_FIX_TIMED = {"NewOrderSingle": "order-to-ack", "OrderCancelRequest": "cancel-to-ack",
              "OrderCancelReplaceRequest": "replace-to-ack"}


class Store(Protocol):
    def query_rows(self, sql: str) -> list[dict]: ...


@dataclass
class LatencyRow:
    protocol: str
    what: str  #: "order-to-ack", a statement shape, "POST /payments/{id}"...
    group: str  #: FIX "SENDER->TARGET" session, PG database, service
    n: int
    errors: int
    excluded: int
    p50_ns: float
    p99_ns: float
    max_ns: int

    def to_json(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "what": self.what, "group": self.group, "n": self.n,
                "errors": self.errors, "excluded": self.excluded, "p50_ns": round(self.p50_ns),
                "p99_ns": round(self.p99_ns), "max_ns": self.max_ns}


def collect(store: Store, from_ns: int | None = None, to_ns: int | None = None,
            protocol: str | None = None) -> list[LatencyRow]:
    where = ["position(attributes, '\"@source\":\"kprobe.decoded\"') > 0"]
    if from_ns is not None:
        where.append(f"ts_ns >= {int(from_ns)}")
    if to_ns is not None:
        where.append(f"ts_ns <= {int(to_ns)}")
    rows = store.query_rows(f"SELECT name, service, duration_ns, status_code, attributes FROM spans "
                            f"WHERE {' AND '.join(where)} ORDER BY ts_ns")
    groups: dict[tuple[str, str, str], list[tuple[int, bool, bool]]] = {}
    for r in rows:
        try:
            a = json.loads(r["attributes"])
        except ValueError:
            continue
        proto = str(a.get("protocol", ""))
        if protocol and proto != protocol:
            continue
        name = str(r["name"])
        if proto == "fix":
            if name not in _FIX_TIMED:
                continue
            what = _FIX_TIMED[name]
            group = f"{a.get('fix.sender', '?')}->{a.get('fix.target', '?')}"
        elif proto == "postgresql":
            what, group = str(a.get("db.statement", name)), str(a.get("db.name", ""))
        else:
            what, group = name, str(r["service"])
        groups.setdefault((proto, what, group), []).append(
            (int(r["duration_ns"]), int(r["status_code"]) == 2, bool(a.get("kprobe.latency_excluded"))))
    out = []
    for (proto, what, group), items in groups.items():
        timed = np.array([d for d, _, ex in items if not ex], dtype=np.float64)
        p50 = float(np.percentile(timed, 50)) if timed.size else 0.0
        p99 = float(np.percentile(timed, 99)) if timed.size else 0.0
        out.append(LatencyRow(proto, what, group, int(timed.size), sum(e for _, e, _ in items),
                              sum(ex for _, _, ex in items), p50, p99, int(timed.max()) if timed.size else 0))
    out.sort(key=lambda r: (r.protocol, -r.p99_ns))
    return out


def _us(ns: float) -> str:
    return f"{ns / 1e3:,.1f}"


def render(rows: list[LatencyRow]) -> str:
    if not rows:
        return "no decoded spans (payload capture records watched services: kprobe record --watch-comm NAME)"
    head = f"{'protocol':<10} {'group':<22} {'n':>7} {'err':>5} {'excl':>5} {'p50 µs':>10} {'p99 µs':>10} {'max µs':>10}  what"
    lines = [head]
    for r in rows:
        lines.append(f"{r.protocol:<10} {r.group[:22]:<22} {r.n:>7} {r.errors:>5} {r.excluded:>5} {_us(r.p50_ns):>10} "
                     f"{_us(r.p99_ns):>10} {_us(r.max_ns):>10}  {r.what[:100]}")
    return "\n".join(lines)
