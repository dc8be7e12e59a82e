"""Incidents that matter: ranked by their impact on user-facing work, repeats of one cause grouped, the top ones
explained.

``incidents`` (incidents.py) lists every slow or failed operation newest first; on a busy
host the newest are rarely the ones to look at. This ranks a fixed pool of them:

1. failed spans, then slow spans, then kernel incidents of processes that serve requests
   (socket I/O, a socket read, or a TCP connection they received on, in the recording), then the rest;
2. within each, by how far the operation stood out against the process's own baseline:
   its duration over the median of the same operation of the same process in the
   recording (span name and service; syscall; run-queue or uninterruptible wait);
3. repeats of one operation (same process, same operation text) are grouped first, so the
   analysis budget goes to distinct ones; the top ``analyse`` groups are explained
   (`kprobe why --incident`) and groups whose root cause (kind and culprit) is the same
   merge into the highest-ranked one.

The cost is bounded: one query per baseline family and ``analyse`` analyses. The pool is
the ``POOL`` newest incidents whatever the limit asked, so the first n of the ranking do
not depend on the limit (a caller may page through it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kprobe.causal.incidents import DEFAULT_SLOW_NS, Incident, incidents, parse_incident_id
from kprobe.causal.model import Analysis
from kprobe.causal.records import Store
from kprobe.causal.target import Target, explain
from kprobe.causal.why import phrase

POOL = 200             # candidates ranked: the newest this many incidents
DEFAULT_ANALYSE = 5    # incidents explained per listing (each is one `why`)
MIN_BASELINE_NS = 1_000_000
MAX_REPEAT_IDS = 20

TIER_NAMES = ("failed span", "slow span", "kernel, serving process", "kernel")


@dataclass
class RankedIncident:
    """An incident with what ranked it, the repeats grouped under it, and its root cause once analysed."""

    incident: Incident
    tier: int
    baseline_ns: int           # the median of the same operation of the same process (0: none known)
    outlier: float             # duration / baseline
    repeats: list[Incident] = field(default_factory=list)
    root_cause: dict[str, Any] | None = None
    analysed: bool = False
    analysis_error: str = ""

    @property
    def key(self) -> tuple:
        """Rank order: tier, then the larger outlier, the longer, the newer, the id (a total order)."""
        i = self.incident
        return (self.tier, -self.outlier, -i.duration_ns, -i.end_ns, i.id)

    def to_json(self) -> dict[str, Any]:
        """``Incident.to_json`` plus the ranking and the root cause (keys added, none changed)."""
        d = self.incident.to_json()
        d.update({"tier": TIER_NAMES[self.tier], "baseline_ns": self.baseline_ns, "outlier": round(self.outlier, 2),
                  "repeats": len(self.repeats), "repeat_ids": [r.id for r in self.repeats[:MAX_REPEAT_IDS]],
                  "analysed": self.analysed, "root_cause": self.root_cause})
        if self.analysis_error:
            d["analysis_error"] = self.analysis_error
        return d


@dataclass
class Ranking:
    items: list[RankedIncident]
    candidates: int          # incidents ranked (the pool)
    analysed: int            # how many were explained


def _op_key(i: Incident) -> str:
    """The operation family an incident's baseline is taken over: span name, syscall, or wait kind."""
    if i.source == "span":
        return i.what
    w = i.what.split(" ", 1)[0]
    return "run-queue" if w == "run-queue" else ("blocked" if w == "blocked" else w)


def _in(vals: set[int]) -> str:
    return ", ".join(str(int(v)) for v in sorted(vals)) or "0"


def _baselines(store: Store, pool: list[Incident]) -> dict[tuple[int, str], int]:
    """(pid, operation family) -> the median duration of that operation of that process in the recording."""
    out: dict[tuple[int, str], int] = {}
    span_pids = {i.pid for i in pool if i.source == "span"}
    if span_pids:
        for r in store.query_rows(f"SELECT pid, name, quantile(0.5)(duration_ns) AS med FROM spans "
                                  f"WHERE pid IN ({_in(span_pids)}) GROUP BY pid, name"):
            out[(int(r["pid"]), f"span {r['name']}")] = int(float(r["med"]))
    kern = {i.pid for i in pool if i.source == "kernel"}
    if kern:
        calls = {_op_key(i) for i in pool if i.source == "kernel"} - {"run-queue", "blocked"}
        if calls:
            names = ", ".join("'" + c.replace("\\", "").replace("'", "") + "'" for c in sorted(calls))
            for r in store.query_rows(f"SELECT tgid, syscall, quantile(0.5)(end_ts - ts) AS med FROM syscall "
                                      f"WHERE tgid IN ({_in(kern)}) AND syscall IN ({names}) GROUP BY tgid, syscall"):
                out[(int(r["tgid"]), str(r["syscall"]))] = int(float(r["med"]))
        for r in store.query_rows(f"SELECT tgid, reason, quantile(0.5)(end_ts - ts) AS med FROM offcpu "
                                  f"WHERE tgid IN ({_in(kern)}) AND reason IN ('preempted', 'uninterruptible') "
                                  "GROUP BY tgid, reason"):
            fam = "run-queue" if r["reason"] == "preempted" else "blocked"
            out[(int(r["tgid"]), fam)] = int(float(r["med"]))
    return out


def _serving(store: Store, pids: set[int]) -> set[int]:
    """Processes that did socket I/O in the recording: they serve (or call) someone, their delays reach users."""
    if not pids:
        return set()
    ids = _in(pids)
    # socket I/O (traced where sends and receives are), a blocked read on a socket, or a TCP connection the
    # process closed after receiving on it (state changes are recorded in every capture mode; an epoll server
    # such as a PostgreSQL backend shows only this)
    got = store.query_rows(f"SELECT DISTINCT tgid FROM sock_io WHERE tgid IN ({ids}) UNION ALL "
                           f"SELECT DISTINCT tgid FROM offcpu WHERE tgid IN ({ids}) AND skaddr != 0 UNION ALL "
                           f"SELECT DISTINCT tgid FROM tcp_state WHERE tgid IN ({ids}) AND bytes_received > 0")
    return {int(r["tgid"]) for r in got}


def _tier(i: Incident, serving: set[int]) -> int:
    if i.source == "span":
        return 0 if i.error else 1
    return 2 if i.pid in serving else 3


def _cause_json(a: Analysis) -> dict[str, Any] | None:
    rc = a.root_cause
    if rc is None:
        return None
    return {"kind": rc.kind, "culprit": rc.culprit.to_json(), "culprit_label": rc.culprit.label(),
            "delay_ns": rc.delay_ns, "summary": phrase(rc)}


def explain_incident(store: Store, inc: Incident) -> Analysis:
    """`kprobe why --incident ID`."""
    kind, val = parse_incident_id(inc.id)
    if kind == "span":
        return explain(store, Target(span_id=val))[0]
    pid, tid, lo, hi = val
    return explain(store, Target(pid=pid, tid=tid, from_ns=lo, to_ns=hi))[0]


def ranked_incidents(store: Store, slow_ns: int = DEFAULT_SLOW_NS, limit: int = 20, analyse: int = DEFAULT_ANALYSE,
                     pool: int = POOL, explainer: Callable[[Store, Incident], Analysis] = explain_incident) -> Ranking:
    """The incidents that matter most first, repeats grouped, the top ``analyse`` explained; at most ``limit``."""
    cands = incidents(store, slow_ns, pool)
    base = _baselines(store, cands)
    serving = _serving(store, {i.pid for i in cands if i.source == "kernel"})
    ranked = []
    for i in cands:
        b = base.get((i.pid, _op_key(i)), 0)
        outlier = i.duration_ns / max(b, MIN_BASELINE_NS) if b else i.duration_ns / max(slow_ns, MIN_BASELINE_NS)
        ranked.append(RankedIncident(i, _tier(i, serving), b, outlier))
    ranked.sort(key=lambda r: r.key)
    # repeats of one operation: same process, same operation text (a wait behind the same PID, the same call)
    groups: dict[tuple, RankedIncident] = {}
    for r in ranked:
        k = (r.incident.pid, r.incident.source, r.incident.what, r.incident.error)
        g = groups.get(k)
        if g is None:
            groups[k] = r
        else:
            g.repeats.append(r.incident)
    heads = list(groups.values())          # still in rank order
    done = 0
    for r in heads[: max(0, analyse)]:
        try:
            r.root_cause = _cause_json(explainer(store, r.incident))
            r.analysed = True
        except Exception as e:     # one bad window must not hide the list: said in the row, counted
            r.analysis_error = f"{type(e).__name__}: {e}"
        done += 1
    # one root cause (kind and culprit) named by several groups: they are repeats of the first
    out: list[RankedIncident] = []
    by_cause: dict[tuple, RankedIncident] = {}
    for r in heads:
        rc = r.root_cause
        if rc is not None and (rc["culprit"].get("pid") is not None or rc["culprit"].get("comm")):
            c = rc["culprit"]
            ck = (rc["kind"], c.get("pid"), c.get("comm") if c.get("pid") is None else None)
            first = by_cause.get(ck)
            if first is not None:
                first.repeats.extend([r.incident, *r.repeats])
                continue
            by_cause[ck] = r
        out.append(r)
    for r in out:
        r.repeats.sort(key=lambda i: (-i.end_ns, i.id))
    return Ranking(out[: max(0, limit)], len(cands), done)
