"""Load the probe objects, share their common maps, attach, and report what worked.

Each concern is its own object so one that the kernel refuses (a missing
tracepoint, a verifier difference) costs only its own event types: the
others still load and the status says exactly what is missing and why.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kprobe.agent import tracefs
from kprobe.agent.block_sums import BlockSums
from kprobe.agent.kernel_hz import interval_jiffies, kernel_hz
from kprobe.agent.libbpf import BpfMap, BpfObject, Libbpf, LibbpfError
from kprobe.agent.node_filter import NodeFilter
from kprobe.schemas import layouts as L
from kprobe.schemas import syscalls
from kprobe.schemas.tables import EVENT_TYPES, PROBES, EventType

# The calls that get their own tracepoints in the bounded policy (schemas/syscall_table.py,
# capture ALWAYS: durability, connection set-up, the fd -> path map); in the filter map they are
# L.KP_SYS_ALWAYS, the other traced calls L.KP_SYS_THRESHOLD (schemas/records.h).
ALWAYS_SYSCALLS = syscalls.ALWAYS

# Default ring sizes (see ProbeConfig.ring_size): offcpu ~7900 records of 264 bytes, syscall ~16k,
# block_io ~10k (most requests are summed in the kernel), proc ~5700, fd_open ~6900.
RING_BYTES = {
    "offcpu": 2 << 20, "syscall": 1 << 20, "sock_io": 256 << 10, "fd_open": 1 << 20, "fault": 512 << 10,
    "block_io": 1 << 20, "proc": 1 << 20, "reclaim": 512 << 10, "oom": 64 << 10, "tcp_state": 1 << 20,
    "tcp_retrans": 256 << 10,
}

SHARED_MAPS = ("kp_runtime", "kp_watched", "kp_watched_comm", "kp_drops", "kp_counters")
SETTINGS_SECTION = ".rodata.kp"   # kp_settings (common.bpf.h): the load-time settings of every object
BUILD_DIR = Path(__file__).resolve().parent.parent / "probes" / "build"


@dataclass
class ProbeConfig:
    ring_bytes: int | None = None      # every ring this size (power of two); None: ring_size() per type
    detail: str = "full"               # the capture policy's name (see `kprobe record --help`)
    min_offcpu_ns: int = 50_000
    min_syscall_ns: int = 0
    fault_sample_every: int = 64
    fault_flush_ms: int = 100
    sock_flush_ms: int = 0             # 0: one sock_io row per send/recv; N: per socket+dir every N ms
    min_block_us: int = 0              # block requests faster than this are summed per submitter (0: a row each)
    watch_pids: list[int] = field(default_factory=list)
    watch_comms: list[str] = field(default_factory=list)
    filter_on: bool = False            # true when a watch list is given or `run` follows a command
    node: NodeFilter | None = None     # one agent per node: only this netns/cgroup's processes (agent/node_filter.py)
    syscalls: list[str] | None = None  # None = the default set
    # bounded system-wide policy: also attach the per-call syscall tracepoints (fsync family, connect, accept,
    # openat, close). Off by default: any syscall tracepoint puts every syscall of every task on the slow path
    call_hooks: bool = False
    ring_overrides: dict[str, int] = field(default_factory=dict)  # event name -> bytes
    probes: tuple[str, ...] = PROBES

    def ring_size(self, event: str) -> int:
        """Bytes of an event type's ring: an override, else the size for what the policy emits.

        Rings are kernel memory, pinned for the recorder's life and mapped twice into its
        address space (data pages follow each other twice so a record never wraps), so
        8 MiB for each of eleven types was a third of the recorder's resident set. The drain
        is woken at 1/8 full; a ring holds a few thousand records, the bursts the policy lets
        through while the drain thread gets a CPU on a saturated host. The per-call streams
        (every syscall, every send/recv) get the large ring only when their hooks run.
        """
        if event in self.ring_overrides:
            return self.ring_overrides[event]
        if self.ring_bytes is not None:
            return self.ring_bytes
        if (event == "syscall" and self.every_syscall) or (event == "sock_io" and self.every_send_recv):
            return 8 << 20
        return RING_BYTES.get(event, 1 << 20)

    @property
    def watching(self) -> bool:
        return bool(self.filter_on or self.watch_pids or self.watch_comms or self.node)

    @property
    def every_syscall(self) -> bool:
        """Whether a program runs on every syscall of the host (raw sys_enter/sys_exit).

        Only full capture and watch lists need it (rows for short calls, or for any traced
        call of a watched process); the bounded system-wide policy attaches the tracepoints
        of the always-recorded calls alone, and reads what a thread blocks in at switch-out.
        """
        custom = self.syscalls is not None and not set(self.syscalls) <= ALWAYS_SYSCALLS
        return self.detail == "full" or self.watching or custom

    @property
    def traces_opens(self) -> bool:
        """Whether opens are rows of their own (fd_open from a hook on openat); otherwise the agent names the
        files of blocked calls from /proc (agent/fd_paths.py)."""
        return self.every_syscall or self.call_hooks

    @property
    def every_send_recv(self) -> bool:
        """Whether a program runs on every socket send and recv of the host. Bounded
        system-wide capture gets the socket of a blocked call from the off-CPU row and each
        connection's byte totals from its tcp_state rows instead."""
        return self.detail == "full" or self.watching

    def wanted(self, program: str) -> bool:
        """Whether a probe object's program is loaded under this policy."""
        if program in ("kp_sys_enter", "kp_sys_exit"):
            return self.every_syscall
        if program.startswith(("kp_enter_", "kp_exit_")):
            return self.call_hooks and not self.every_syscall
        if program in ("kp_sock_send_length", "kp_sock_recv_length"):
            return self.every_send_recv
        return True


@dataclass
class AttachStatus:
    probe: str
    program: str
    section: str
    attached: bool
    error: str = ""


@dataclass
class ProbeSet:
    config: ProbeConfig
    build_dir: Path = BUILD_DIR
    lib: Libbpf = field(default_factory=Libbpf)
    objects: dict[str, BpfObject] = field(default_factory=dict)
    shared: dict[str, BpfMap] = field(default_factory=dict)
    status: list[AttachStatus] = field(default_factory=list)
    load_errors: dict[str, str] = field(default_factory=dict)
    _tracefs_error: str = ""
    _runtime: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=L.KP_RUNTIME))

    def open(self) -> ProbeSet:
        for probe in self.config.probes:
            path = self.build_dir / f"{probe}.bpf.o"
            if not path.exists():
                raise FileNotFoundError(f"{path} is missing: build the probes first (make probes)")
            try:
                self._load_one(probe, path)
            except LibbpfError as e:
                self.load_errors[probe] = str(e)
        if not self.objects:
            detail = "; ".join(f"{k}: {v}" for k, v in self.load_errors.items())
            raise LibbpfError(0, f"no probe object could be loaded ({detail})")
        self._configure()
        self._tracefs_error = "" if self.config.every_syscall else tracefs.ensure_mounted()
        for probe, obj in self.objects.items():
            self._attach(probe, obj)
        return self

    def open_object(self, path: Path) -> BpfObject:
        """A probe object opened to join this set: its settings filled in, the maps shared so far reused.

        Every object of the set (and the replay probe, loaded beside it) must see the same settings
        and the same watch list, counters and drops.
        """
        obj = BpfObject(self.lib, str(path)).open()
        try:
            obj.set_initial_value(SETTINGS_SECTION, self._settings().tobytes())
            for name, m in self.shared.items():
                obj.reuse_map(name, m.fd)
        except LibbpfError:
            obj.close()
            raise
        return obj

    def _load_one(self, probe: str, path: Path) -> None:
        obj = self.open_object(path)
        try:
            for et in self.event_types(probe):
                obj.set_max_entries(et.ring, self.config.ring_size(et.name))
            for prog in obj.programs():
                if not self.config.wanted(prog.name):
                    prog.set_autoload(False)
            obj.load()
        except LibbpfError:
            obj.close()
            raise
        for name in SHARED_MAPS:
            if name not in self.shared:
                self.shared[name] = obj.map(name)
        self.objects[probe] = obj

    def _attach(self, probe: str, obj: BpfObject) -> None:
        for prog in obj.programs():
            if not self.config.wanted(prog.name):
                continue
            try:
                obj.links.append(prog.attach())
                self.status.append(AttachStatus(probe, prog.name, prog.section, True))
            except LibbpfError as e:
                why = str(e)
                if prog.section.startswith("tracepoint/") and self._tracefs_error:
                    why = f"{why}; {self._tracefs_error}"
                self.status.append(AttachStatus(probe, prog.name, prog.section, False, why))

    def _settings(self) -> np.ndarray:
        """The probes' load-time settings (kp_config in records.h), from this set's configuration."""
        c = self.config
        cfg = np.zeros(1, dtype=L.KP_CONFIG)
        cfg["min_offcpu_ns"] = c.min_offcpu_ns
        cfg["min_syscall_ns"] = c.min_syscall_ns
        cfg["filter_on"] = 1 if c.watching else 0
        if c.node is not None:
            cfg["node_netns_ino"] = c.node.netns_ino
            cfg["node_cgroup_id"] = c.node.cgroup_id
            cfg["node_cgroup_level"] = c.node.cgroup_level
        cfg["self_tgid"] = _self_tgid()
        cfg["fault_sample_every"] = max(1, c.fault_sample_every)
        cfg["fault_flush_ms"] = c.fault_flush_ms
        cfg["fault_flush_jiffies"] = interval_jiffies(c.fault_flush_ms, kernel_hz())
        cfg["sock_flush_ms"] = max(0, c.sock_flush_ms)
        cfg["sock_flush_jiffies"] = interval_jiffies(c.sock_flush_ms, kernel_hz())
        cfg["min_block_us"] = max(0, c.min_block_us)
        return cfg

    def _configure(self) -> None:
        c = self.config
        for pid in c.watch_pids:
            self.watch_pid(pid)
        for pid in c.node.scan() if c.node is not None else ():
            self.watch_pid(pid)
        for comm in c.watch_comms:
            key = np.zeros(1, dtype=f"S{L.KP_COMM_LEN}")
            key[0] = comm.encode()[: L.KP_COMM_LEN - 1]
            self.shared["kp_watched_comm"].update(key, np.ones(1, dtype=np.uint8))
        if "syscalls" in self.objects:
            filt = self.objects["syscalls"].map("kp_syscall_filter")
            always = {syscalls.X86_64[n][0] for n in ALWAYS_SYSCALLS}
            for nr in syscalls.numbers(c.syscalls):
                val = np.array([L.KP_SYS_ALWAYS if nr in always else L.KP_SYS_THRESHOLD], dtype=np.uint8)
                filt.update(np.array([nr], dtype=np.uint32), val)

    def watch_pid(self, pid: int) -> None:
        self.shared["kp_watched"].update(np.array([pid], dtype=np.uint32), np.ones(1, dtype=np.uint8))

    def event_types(self, probe: str | None = None) -> list[EventType]:
        return [e for e in EVENT_TYPES if probe is None or e.probe == probe]

    def loaded_event_types(self) -> list[EventType]:
        return [e for e in EVENT_TYPES if e.probe in self.objects]

    def ring_map(self, et: EventType) -> BpfMap:
        return self.objects[et.probe].map(et.ring)

    def read_percpu(self, name: str, n: int) -> np.ndarray:
        """Per-CPU array map -> (n keys, ncpus) uint64 matrix."""
        ncpu = self.lib.num_possible_cpus()
        out = np.zeros((n, ncpu), dtype=np.uint64)
        m = self.shared[name]
        for k in range(n):
            m.lookup(np.array([k], dtype=np.uint32), out[k])
        return out

    def set_block_epoch(self, epoch: int) -> None:
        """The generation of block request sums the probes add to (see agent/block_sums.py)."""
        self._runtime["block_epoch"] = epoch
        self.shared["kp_runtime"].update(np.zeros(1, dtype=np.uint32), self._runtime)

    def block_sums(self) -> BlockSums | None:
        """The reader of the kernel's sums of fast block requests, when blockio is loaded."""
        if "blockio" not in self.objects:
            return None
        blockio = self.objects["blockio"]
        return BlockSums(blockio.map("block_agg"), blockio.map("block_writers"), self.lib.num_possible_cpus(),
                         self.set_block_epoch)

    def drops(self) -> np.ndarray:
        return self.read_percpu("kp_drops", L.KP_EV_MAX)

    def counters(self) -> np.ndarray:
        return self.read_percpu("kp_counters", L.KP_CNT_MAX)

    def recursion_misses(self) -> dict[str, int]:
        """Per attached program, the runs the kernel skipped (nested on one CPU); see BpfProgram."""
        attached = {(s.probe, s.program) for s in self.status if s.attached}
        return {prog.name: prog.recursion_misses() for probe, obj in self.objects.items()
                for prog in obj.programs() if (probe, prog.name) in attached}

    def close(self) -> None:
        for obj in self.objects.values():
            obj.close()
        self.objects.clear()


def _self_tgid() -> int:
    return ctypes.CDLL(None).getpid()
