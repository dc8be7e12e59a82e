"""What the recorder has done, in one place: shown by `kprobe stats`, saved as status.json.

Every event is accounted for: drained from the ring, written to the sink, or
counted as lost (kernel ring full: per CPU and type; sink write failed: per type).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from kprobe.agent import capabilities, host_identity
from kprobe.agent.clock import ClockSync
from kprobe.schemas import layouts as L
from kprobe.schemas.tables import EVENT_TYPES

if TYPE_CHECKING:
    from kprobe.agent.probeset import ProbeSet

COUNTER_NAMES = {
    L.KP_CNT_SWITCHES: "sched_switches",
    L.KP_CNT_OFFCPU_SHORT: "offcpu_below_threshold",
    L.KP_CNT_OFFCPU_SHORT_NS: "offcpu_below_threshold_ns",
    L.KP_CNT_SYSCALL_SHORT: "syscalls_below_threshold",
    L.KP_CNT_FAULTS: "page_faults_watched",
    L.KP_CNT_SOCK_IO_UNWATCHED: "sock_io_unwatched",
    L.KP_CNT_SYSCALL_SHORT_NS: "syscalls_below_threshold_ns",
    L.KP_CNT_SOCK_IO_FOLDED: "sock_io_folded",
    L.KP_CNT_BLOCK_SLOT_REUSED: "block_owner_overwritten",
    L.KP_CNT_WAKE_UNSEEN: "offcpu_wake_unseen",
    L.KP_CNT_BLOCK_AGGREGATED: "block_requests_summed",
}


@dataclass
class RecorderStats:
    started_at_ns: int = field(default_factory=time.time_ns)
    pid: int = field(default_factory=os.getpid)
    drained: dict[str, int] = field(default_factory=dict)
    written: dict[str, int] = field(default_factory=dict)
    write_errors: dict[str, int] = field(default_factory=dict)
    # rows with impossible times or ids, not stored (agent/row_checks.py): a probe or kernel bug, counted
    rejected: dict[str, int] = field(default_factory=dict)
    # the recorder's own cost: CPU seconds, resident memory (anon = its heap, file = mapped code and BPF
    # rings) and its split by kind under "memory" (agent/self_cost.py), rows/s
    resources: dict[str, Any] = field(default_factory=dict)
    # library code unmapped at the last trim, MB (agent/code_pages.py)
    code_trimmed_mb: float = 0.0
    kernel_drops: dict[str, list[int]] = field(default_factory=dict)  # type -> per CPU
    counters: dict[str, int] = field(default_factory=dict)
    # program runs the kernel skipped because the program was already running on that CPU (nested
    # by an interrupt): events lost before any ring; only programs with misses are listed
    program_misses: dict[str, int] = field(default_factory=dict)
    attach: list[dict] = field(default_factory=list)
    load_errors: dict[str, str] = field(default_factory=dict)
    clock: ClockSync | None = None
    policy: dict = field(default_factory=dict)  # capture policy and thresholds in effect
    last_error: str = ""
    status_errors: int = 0      # failed writes of status.json (the first one is logged)
    partitions_dropped: int = 0
    # retention passes so far (sinks/retention.py): partitions dropped, future-dated ones among them,
    # partitions trimmed by row deletes, and the store's size before/after the last pass
    retention: dict[str, int] = field(default_factory=dict)
    # memcg member snapshots (agent/memcg_members.py): taken, member rows, members beyond the cap, ids not found
    memcg_snapshots: dict[str, int] = field(default_factory=dict)
    # CPU quota throttling samples (agent/cgroup_cpu.py): samples, rows, cgroups with a quota, members beyond the cap
    cgroup_cpu: dict[str, int] = field(default_factory=dict)
    # interrupt time per CPU (agent/cpu_irq.py): samples, samples with a CPU busy in interrupts, rows
    cpu_irq: dict[str, int] = field(default_factory=dict)
    # fast block requests summed in the kernel (agent/block_sums.py): block_io rows made of sums, requests in them
    block_sums: dict[str, int] = field(default_factory=dict)
    # files of blocked calls named from /proc when no hook sees opens (agent/fd_paths.py): by path, by inode only
    file_names: dict[str, int] = field(default_factory=dict)
    # processes in containers / pods / named by the kubelet, kubelet fetches and errors (agent/pod_identity.py)
    pod_identity: dict = field(default_factory=dict)
    # held capabilities, and per feature the missing ones and what degrades (agent/capabilities.py)
    capabilities: dict = field(default_factory=dict)
    # which machine and boot this is, and the kernel's view of its wall clock (agent/host_identity.py)
    host: dict = field(default_factory=dict)
    host_key: str = ""          # the ``host`` this agent writes on every row
    last_event_ts: int = 0      # newest event ``ts`` written (the heartbeat's last_event_ts)
    node_filter: dict = field(default_factory=dict)   # one agent per node: processes watched, rescans
    last_written_mono_ns: int = 0
    finished: bool = False

    def set_probes(self, probes: ProbeSet, clk: ClockSync) -> None:
        self.attach = [asdict(s) for s in probes.status]
        self.load_errors = dict(probes.load_errors)
        c = probes.config
        self.policy = {"detail": c.detail, "min_offcpu_ns": c.min_offcpu_ns, "min_syscall_ns": c.min_syscall_ns,
                       "sock_flush_ms": c.sock_flush_ms, "min_block_us": c.min_block_us,
                       "fault_sample_every": c.fault_sample_every,
                       "filter_on": c.watching,
                       "syscall_hooks": ("every syscall" if c.every_syscall else
                                         "per-call tracepoints (always-recorded calls)" if c.call_hooks else
                                         "none (blocked calls read at switch-out, files named from /proc)"),
                       "send_recv_hooks": c.every_send_recv,
                       "ring_kb": {e.name: c.ring_size(e.name) >> 10 for e in probes.loaded_event_types()}}
        self.clock = clk
        self.capabilities = capabilities.check().to_dict()
        self.host = host_identity.HostIdentity.read().to_dict(host_identity.wall_clock())
        self.host["key"] = self.host_key
        if c.node is not None:
            self.policy["node"] = c.node.describe()

    def update_kernel(self, probes: ProbeSet) -> None:
        if self.host:      # a daemon may (re)synchronise the clock while we record
            self.host["clock"] = host_identity.wall_clock().to_dict()
        drops = probes.drops()
        for et in EVENT_TYPES:
            self.kernel_drops[et.name] = [int(x) for x in drops[et.type_id]]
        cnt = probes.counters().sum(axis=1)
        self.counters = {name: int(cnt[i]) for i, name in COUNTER_NAMES.items()}
        self.program_misses = {k: v for k, v in probes.recursion_misses().items() if v > 0}

    def total_drops(self) -> int:
        return (sum(sum(v) for v in self.kernel_drops.values()) + sum(self.write_errors.values())
                + sum(self.program_misses.values()))

    def status_fields(self) -> dict[str, Any]:
        """The fields as they are, plus the totals: what status.json and `kprobe stats` show. A
        subclass adds its own (the Kafka sink's counters) here."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["kernel_drops_total"] = {k: sum(v) for k, v in self.kernel_drops.items()}
        d["lost_total"] = self.total_drops()
        return d

    def to_dict(self) -> dict:
        """A plain copy (JSON types only) for a caller to keep or change."""
        return msgspec.json.decode(msgspec.json.encode(self.status_fields()))

    def save(self, path: Path) -> None:
        """Written every second: msgspec encodes the fields, nested dataclasses, dicts and lists as they
        are (``asdict``'s deep copy through ``json`` took ~5x the CPU)."""
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(msgspec.json.encode(self.status_fields()))
        os.replace(tmp, path)
