"""What a causal analysis answers, as plain dataclasses.

The analysis turns "this thread was slow between t1 and t2" into a ranked list
of causes, each possibly explained by deeper causes (``children``), and picks
the root cause as the deepest cause on the largest-delay path. Everything here
is engine-free so the same objects serve the CLI, tests and a future span API.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CAUSE_KINDS = (
    "cpu_preemption",
    "cpu_throttling",
    "softirq",
    "cpu_migration",
    "memory_pressure",
    "disk_io",
    "major_fault",
    "network",
    "lock_contention",
    "remote_service",
    "sleep",
    "unknown",
)


@dataclass(frozen=True)
class Interval:
    """The slow operation: a process (or one of its threads) over a UTC-ns window.

    ``tid`` None means "whichever thread of the process was delayed most"; the
    analysis then says which thread it picked.
    """

    tgid: int
    start_ns: int
    end_ns: int
    tid: int | None = None

    def __post_init__(self) -> None:
        if self.end_ns <= self.start_ns:
            raise ValueError(f"empty interval: end {self.end_ns} <= start {self.start_ns}")

    @property
    def wall_ns(self) -> int:
        return self.end_ns - self.start_ns


@dataclass
class Culprit:
    """Who caused a delay; tid is kept because lock holders are often threads of the victim itself."""

    pid: int | None
    comm: str | None
    tid: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "tid": self.tid, "comm": self.comm}

    def label(self) -> str:
        if self.pid is None:
            return self.comm or "unknown"     # a culprit that is no process (a softirq kind on a CPU), or nobody
        who = f"{self.comm or '?'} PID {self.pid}"
        if self.tid is not None and self.tid != self.pid:
            who += f" TID {self.tid}"
        return who


@dataclass
class Cause:
    """One reason for delay, with how much of the victim's wall time it explains.

    ``children`` explain the cause itself (e.g. the preemptor was in direct
    reclaim); they always describe time inside the parent's delay.
    """

    kind: str
    culprit: Culprit
    delay_ns: int
    evidence: list[Any] = field(default_factory=list)
    children: list[Cause] = field(default_factory=list)
    cpu: int | None = None      # for cpu_preemption: the CPU the victim waited on (most of the time)
    summary: str = ""           # one human phrase, e.g. "preempted on CPU 1"

    def __post_init__(self) -> None:
        if self.kind not in CAUSE_KINDS:
            raise ValueError(f"unknown cause kind {self.kind!r}")

    def to_json(self, with_children: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "kind": self.kind,
            "culprit": self.culprit.to_json(),
            "delay_ns": int(self.delay_ns),
            "evidence": list(self.evidence),
        }
        if self.cpu is not None:
            d["cpu"] = self.cpu
        if self.summary:
            d["summary"] = self.summary
        if with_children:
            d["children"] = [c.to_json() for c in self.children]
        return d


@dataclass
class PreemptorShare:
    """Run-queue wait attributed to one task that was switched in instead of the victim."""

    pid: int
    tid: int
    comm: str
    cpu: int
    runq_ns: int
    count: int

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "tid": self.tid, "comm": self.comm, "cpu": self.cpu,
                "runq_ns": int(self.runq_ns), "count": self.count}


@dataclass
class Breakdown:
    """Where the victim thread's wall time went. on_cpu + runq + blocked == wall.

    reclaim_ns overlaps the others (reclaim runs on CPU and may sleep), io_ns and
    net_ns are the part of blocked_ns spent in disk or socket waits.
    """

    tid: int
    wall_ns: int
    on_cpu_ns: int
    runq_ns: int
    blocked_ns: int
    blocked_by_reason: dict[str, int] = field(default_factory=dict)
    runq_by_preemptor: list[PreemptorShare] = field(default_factory=list)
    reclaim_ns: int = 0
    fault_count: int = 0
    io_ns: int = 0
    net_ns: int = 0
    futex_ns: int = 0
    offcpu_intervals: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "tid": self.tid,
            "wall_ns": int(self.wall_ns),
            "on_cpu_ns": int(self.on_cpu_ns),
            "runq_ns": int(self.runq_ns),
            "blocked_ns": int(self.blocked_ns),
            "blocked_by_reason": {k: int(v) for k, v in sorted(self.blocked_by_reason.items())},
            "runq_by_preemptor": [p.to_json() for p in self.runq_by_preemptor],
            "reclaim_ns": int(self.reclaim_ns),
            "fault_count": int(self.fault_count),
            "io_ns": int(self.io_ns),
            "net_ns": int(self.net_ns),
            "futex_ns": int(self.futex_ns),
            "offcpu_intervals": self.offcpu_intervals,
        }


@dataclass
class Analysis:
    """The answer: root cause, the wall-time breakdown, and the explaining chain (newest effect first).

    ``chain[0]`` is the biggest direct cause of the victim's delay and
    ``chain[-1]`` the root cause; ``causes`` are all direct causes, ranked.
    """

    interval: Interval
    comm: str
    operation: str                 # e.g. "write fd=7" (the longest syscall in the window) or ""
    operation_ns: int
    root_cause: Cause | None
    breakdown: Breakdown
    chain: list[Cause] = field(default_factory=list)
    causes: list[Cause] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "victim": {"pid": self.interval.tgid, "tid": self.breakdown.tid, "comm": self.comm,
                       "from_ns": self.interval.start_ns, "to_ns": self.interval.end_ns,
                       "operation": self.operation, "operation_ns": int(self.operation_ns)},
            "root_cause": self.root_cause.to_json(with_children=False) if self.root_cause else None,
            "breakdown": self.breakdown.to_json(),
            "chain": [c.to_json(with_children=False) for c in self.chain],
            "causes": [c.to_json() for c in self.causes],
            "notes": list(self.notes),
        }
