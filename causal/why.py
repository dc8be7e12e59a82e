"""`why`: from a slow operation (pid over a window) to its kernel root cause, and how to print it.

``why`` is fetch (the only store access) + analyze (pure). The renderer prints
the chain newest effect first, so the first line reads like the incident and the
last arrow lands on the root cause.
"""

from __future__ import annotations

from kprobe.causal.analyze import analyze
from kprobe.causal.fetch import fetch_evidence
from kprobe.causal.model import Analysis, Cause, Interval
from kprobe.causal.records import Evidence, Store
from kprobe.query.timefmt import format_ts


class NoDataError(LookupError):
    """Nothing at all was recorded for the process in the window: no analysis is better than a wrong one."""


def why(store: Store, pid: int, from_ns: int, to_ns: int, tid: int | None = None) -> Analysis:
    """Explain why ``pid`` (or its thread ``tid``) was slow between ``from_ns`` and ``to_ns`` (UTC ns)."""
    iv = Interval(tgid=int(pid), start_ns=int(from_ns), end_ns=int(to_ns), tid=None if tid is None else int(tid))
    ev: Evidence = fetch_evidence(store, iv)
    if not ev.has_data():
        raise NoDataError(f"nothing recorded for PID {iv.tgid} between {format_ts(iv.start_ns)} and "
                          f"{format_ts(iv.end_ns)} (was it watched? is the window right?)")
    return analyze(ev)


def _ms(ns: int) -> str:
    return f"{ns / 1e6:.0f} ms" if ns >= 10_000_000 else f"{ns / 1e6:.2f} ms"


def phrase(c: Cause) -> str:
    """One link of the chain in words."""
    who = c.culprit.label()
    d = _ms(c.delay_ns)
    k = c.kind
    if k == "cpu_preemption":
        if c.culprit.pid is None:
            return f"waited {d} for a CPU (run queue, no single preemptor)"
        if c.summary.startswith("run queue after wake-up"):
            return f"waited {d} for CPU {c.cpu} after wake-up while {who} ran"
        return f"preempted {d} on CPU {c.cpu} by {who}"
    if k == "cpu_throttling":
        ev = next((e for e in c.evidence if isinstance(e, dict) and "cgroup" in e), {})
        return (f"throttled {d}: {c.summary} by {who}" + (f"; fix: {ev['fix']}" if ev.get("fix") else ""))
    if k == "cpu_migration":
        return f"waited {d} for a CPU after being {c.summary}"
    if k == "softirq":
        return f"interrupts took {d}: {c.summary}"
    if k == "memory_pressure":
        return f"memory pressure {d}: {c.summary or who}" + (f" (culprit {who})" if who not in c.summary else "")
    if k == "disk_io":
        return f"disk I/O {d} in {c.summary}" + (f", device busy with I/O of {who}" if c.culprit.pid is not None else "")
    if k == "major_fault":
        return f"{c.summary} {d}" + (f", device busy with I/O of {who}" if c.culprit.pid is not None else "")
    if k == "network":
        return f"network {d}: {c.summary}"
    if k == "lock_contention":
        return f"lock wait {d} ({c.summary or 'futex'}) held by {who}"
    if k == "remote_service":
        return f"{c.summary} {d}" + (f", served by {who}" if c.culprit.pid is not None and who not in c.summary else "")
    if k == "sleep":
        return f"slept {d} ({c.summary})"
    return f"{c.summary or 'unexplained'} {d}"


def render_text(a: Analysis) -> str:
    """Chain first (the answer), then the wall-time breakdown and the other ranked causes."""
    b = a.breakdown
    head = f"{a.comm} PID {a.interval.tgid}"
    if b.tid != a.interval.tgid:
        head += f" TID {b.tid}"
    head += f" {a.operation} {_ms(a.operation_ns)}" if a.operation else f" {_ms(b.wall_ns)} window"
    lines = []
    if a.chain:
        links = [head] + [phrase(c) for c in a.chain]
        lines.append(" ← ".join(links) + "  [ROOT CAUSE]")
    else:
        lines.append(f"{head}: no delay found (on CPU {_ms(b.on_cpu_ns)} of {_ms(b.wall_ns)})")
    lines.append("")
    lines.append(f"window {format_ts(a.interval.start_ns)} .. {format_ts(a.interval.end_ns)} ({_ms(b.wall_ns)})")
    lines.append(f"  on CPU {_ms(b.on_cpu_ns)}, run queue {_ms(b.runq_ns)}, blocked {_ms(b.blocked_ns)}"
                 + "".join(f" [{k} {_ms(v)}]" for k, v in sorted(b.blocked_by_reason.items())))
    extra = [f"reclaim {_ms(b.reclaim_ns)}" if b.reclaim_ns else "", f"disk {_ms(b.io_ns)}" if b.io_ns else "",
             f"net {_ms(b.net_ns)}" if b.net_ns else "", f"futex {_ms(b.futex_ns)}" if b.futex_ns else "",
             f"{b.fault_count} page faults" if b.fault_count else ""]
    if any(extra):
        lines.append("  " + ", ".join(x for x in extra if x))
    for p in b.runq_by_preemptor[:5]:
        lines.append(f"  run queue behind {p.comm} PID {p.pid} on CPU {p.cpu}: {_ms(p.runq_ns)} ({p.count}x)")
    if a.causes:
        lines.append("causes, by delay explained:")
        for c in a.causes:
            _cause_lines(c, 1, lines)
    for n in a.notes:
        lines.append(f"note: {n}")
    return "\n".join(lines)


def _cause_lines(c: Cause, depth: int, out: list[str]) -> None:
    out.append("  " * depth + f"- {c.kind}: {phrase(c)}")
    for ch in c.children:
        _cause_lines(ch, depth + 1, out)
