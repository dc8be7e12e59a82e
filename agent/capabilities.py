"""Which Linux capabilities the agent holds, and what each missing one costs.

A container runtime gives the agent exactly the capabilities its manifest adds (the Helm chart:
CAP_BPF, CAP_PERFMON, CAP_SYS_RESOURCE). Loading fails deep inside libbpf with a bare EPERM and a
misleading "try raising ulimit -l" when one is missing, so the agent checks its own set first and
says which capability is missing and which feature goes without it.

What needs what was measured on kernel 6.18 by starting `kprobe record` with reduced bounding
sets (setpriv; tests/deploy/test_agent_capabilities.py):

* probes: CAP_BPF alone: every tracing program is refused (EPERM); CAP_PERFMON alone: not even
  maps load. Both, or CAP_SYS_ADMIN (which covers both, and is the only way before 5.8), attach
  every program. CAP_SYS_RESOURCE is not needed: since 5.11 BPF memory is charged to the memory
  cgroup, not RLIMIT_MEMLOCK; before that libbpf raises RLIMIT_MEMLOCK, which needs it.
* tracefs (the per-call syscall tracepoints: fsync, connect, accept, openat, close, ...): read
  only, no capability, when it is mounted (the chart mounts the host's); mounting it needs
  CAP_SYS_ADMIN.
* /proc/<pid>/exe, /proc/<pid>/environ (OTEL_SERVICE_NAME) and /proc/<pid>/io of processes with
  other credentials or more capabilities: CAP_SYS_PTRACE (EACCES without it).
* the replayable recording's time uprobes (`--replayable`): perf_event_open of the uprobe PMU
  returned EACCES with CAP_BPF + CAP_PERFMON (+ CAP_SYS_PTRACE); only CAP_SYS_ADMIN attached them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

# include/uapi/linux/capability.h
CAP_NUMBERS: dict[str, int] = {
    "CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6,
    "SETUID": 7, "SETPCAP": 8, "LINUX_IMMUTABLE": 9, "NET_BIND_SERVICE": 10, "NET_BROADCAST": 11,
    "NET_ADMIN": 12, "NET_RAW": 13, "IPC_LOCK": 14, "IPC_OWNER": 15, "SYS_MODULE": 16, "SYS_RAWIO": 17,
    "SYS_CHROOT": 18, "SYS_PTRACE": 19, "SYS_PACCT": 20, "SYS_ADMIN": 21, "SYS_BOOT": 22, "SYS_NICE": 23,
    "SYS_RESOURCE": 24, "SYS_TIME": 25, "SYS_TTY_CONFIG": 26, "MKNOD": 27, "LEASE": 28, "AUDIT_WRITE": 29,
    "AUDIT_CONTROL": 30, "SETFCAP": 31, "MAC_OVERRIDE": 32, "MAC_ADMIN": 33, "SYSLOG": 34, "WAKE_ALARM": 35,
    "BLOCK_SUSPEND": 36, "AUDIT_READ": 37, "PERFMON": 38, "BPF": 39, "CHECKPOINT_RESTORE": 40,
}
RELEVANT = ("BPF", "PERFMON", "SYS_RESOURCE", "SYS_PTRACE", "SYS_ADMIN")   # the ones any feature here uses
MEMCG_BPF_ACCOUNTING = (5, 11)   # kernels before this charge BPF maps to RLIMIT_MEMLOCK


def cap_name(name: str) -> str:
    return "CAP_" + name


def names_of(mask: int) -> list[str]:
    return [n for n, bit in CAP_NUMBERS.items() if mask >> bit & 1]


@dataclass(frozen=True)
class CapSets:
    effective: int
    permitted: int
    bounding: int

    def has(self, name: str) -> bool:
        return bool(self.effective >> CAP_NUMBERS[name] & 1)


def read_capsets(status: Path = Path("/proc/self/status")) -> CapSets:
    """The process's capability sets from /proc/<pid>/status (what capget(2) returns)."""
    vals: dict[str, int] = {}
    for line in status.read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("CapEff", "CapPrm", "CapBnd"):
            vals[key] = int(rest.strip(), 16)
    return CapSets(vals.get("CapEff", 0), vals.get("CapPrm", 0), vals.get("CapBnd", 0))


@dataclass(frozen=True)
class Feature:
    """A feature and the capability sets that enable it: any one of ``any_of`` must be held whole."""

    name: str
    any_of: tuple[tuple[str, ...], ...]   # least privilege first: the one a report asks for
    without: str            # what happens when none is held
    essential: bool = False


@dataclass(frozen=True)
class Environment:
    """The facts beside the capability sets that decide whether a capability is needed at all."""

    kernel: tuple[int, int]
    memlock_unlimited: bool
    tracefs_reachable: bool
    replayable: bool = False   # `--replayable` asked for: its uprobes count


PROBES = Feature("eBPF probes", (("BPF", "PERFMON"), ("SYS_ADMIN",)),
                 "no probe can be loaded: nothing is recorded", essential=True)
MEMLOCK = Feature("BPF map memory (RLIMIT_MEMLOCK, kernels < 5.11)", (("SYS_RESOURCE",), ("SYS_ADMIN",)),
                  "libbpf cannot raise RLIMIT_MEMLOCK: rings and maps larger than the limit fail to load")
TRACEFS = Feature("mounting tracefs", (("SYS_ADMIN",),),
                  "tracefs is not mounted and cannot be: the per-call syscall tracepoints (fsync, fdatasync, "
                  "sync_file_range, connect, accept, openat, close) are not attached; mount the host's "
                  "/sys/kernel/tracing into the agent (the chart does)")
PROCESS_DETAILS = Feature("other processes' /proc details", (("SYS_PTRACE",),),
                          "no exe path, no OTEL_SERVICE_NAME from /proc/<pid>/environ (service names come "
                          "from the pod's workload or comm) and no read/write byte counts in memcg_members "
                          "for processes with other credentials")
REPLAY_UPROBES = Feature("replayable recording's time uprobes (--replayable)", (("SYS_ADMIN",),),
                         "clock_gettime is not probed: its reads are synthesized at replay from the timeline")


def features_for(env: Environment) -> list[Feature]:
    """The features whose capability matters on this machine (memlock only before 5.11 with a limit,
    tracefs only when it is not reachable already)."""
    out = [PROBES]
    if env.kernel < MEMCG_BPF_ACCOUNTING and not env.memlock_unlimited:
        out.append(MEMLOCK)
    if not env.tracefs_reachable:
        out.append(TRACEFS)
    out.append(PROCESS_DETAILS)
    if env.replayable:
        out.append(REPLAY_UPROBES)
    return out


@dataclass
class CapabilityReport:
    held: list[str]
    # feature -> the capabilities missing for its cheapest option (empty lists are not stored)
    missing: dict[str, list[str]] = field(default_factory=dict)
    degraded: dict[str, str] = field(default_factory=dict)  # feature -> what goes without it
    can_record: bool = True

    def error(self) -> str:
        """The start-up error when nothing can be attached, naming exactly the missing capabilities."""
        need = self.missing.get(PROBES.name, [])
        held = [c for c in RELEVANT if c in self.held]
        return (f"cannot load eBPF probes: missing capabilities {', '.join(map(cap_name, need))} "
                f"(held: {', '.join(map(cap_name, held)) or 'none'} of those kprobe uses, {len(self.held)} in all); "
                "loading eBPF probes needs root, or CAP_BPF + CAP_PERFMON (CAP_SYS_ADMIN on kernels before 5.8): "
                "run with sudo, or give the agent container those capabilities")

    def warnings(self) -> list[str]:
        return [f"without {', '.join(map(cap_name, self.missing[f]))}: {f}: {self.degraded[f]}"
                for f in self.degraded]

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate(caps: CapSets, env: Environment) -> CapabilityReport:
    report = CapabilityReport(held=names_of(caps.effective))
    for feat in features_for(env):
        options = [[c for c in opt if not caps.has(c)] for opt in feat.any_of]
        if any(not lack for lack in options):
            continue
        report.missing[feat.name] = options[0]   # the least-privilege option is the one to grant
        report.degraded[feat.name] = feat.without
        if feat.essential:
            report.can_record = False
    return report


def current_environment(replayable: bool = False) -> Environment:
    import platform
    import resource

    from kprobe.agent import tracefs

    rel = platform.release().split("-")[0].split(".")
    kernel = (int(rel[0]), int(rel[1]) if len(rel) > 1 and rel[1].isdigit() else 0)
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    return Environment(kernel, soft == resource.RLIM_INFINITY, tracefs.events_dir() is not None, replayable)


def check(replayable: bool = False) -> CapabilityReport:
    """This process's report (reads /proc/self/status, the kernel release, RLIMIT_MEMLOCK, tracefs)."""
    return evaluate(read_capsets(), current_environment(replayable))
