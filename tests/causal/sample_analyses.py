"""Hand-built analyses with known chains, shared by the graph tests (no kernel, no store)."""

from __future__ import annotations

from kprobe.causal.analyze import analyze
from kprobe.causal.model import Analysis, Interval
from kprobe.causal.records import Evidence, OffCpu, Reclaim, SockIO, Syscall

MS = 1_000_000
T0 = 1_700_000_000_000_000_000


def _off(tgid: int, tid: int, a: int, b: int, reason: str = "preempted", wake: int = 0, cpu: int = 1,
         p: tuple[int, int, str] = (0, 0, ""), w: tuple[int, int, str] = (0, 0, ""), comm: str = "victim") -> OffCpu:
    return OffCpu(tgid, tid, comm, T0 + a * MS, T0 + b * MS, T0 + wake * MS if wake else 0, reason, cpu, cpu,
                  p[0], p[1], p[2], w[0], w[1], w[2])


def three_hop() -> Analysis:
    """payment waits 250 ms on a socket for pricing (pid 20), which was preempted by batch (30) in reclaim.

    Chain: remote_service (pricing) <- cpu_preemption (batch) <- memory_pressure (batch direct reclaim).
    """
    ev = Evidence(Interval(10, T0, T0 + 300 * MS))
    ev.add_offcpu([
        _off(10, 10, 10, 260, reason="sleep", wake=250, w=(20, 21, "pricing"), comm="payment"),
        _off(20, 21, 20, 200, p=(30, 30, "batch"), comm="pricing"),
        _off(10, 10, 270, 280, p=(40, 40, "noise"), comm="payment"),
    ])
    ev.add_syscalls([Syscall(10, 10, "recvfrom", 4, T0 + 5 * MS, T0 + 261 * MS, 0, 0)])
    ev.sock_io = [SockIO(10, 10, T0 + 261 * MS, 1, "recv", 100, "127.0.0.1", 5000, "127.0.0.1", 8080),
                  SockIO(20, 21, T0 + 249 * MS, 2, "send", 100, "127.0.0.1", 8080, "127.0.0.1", 5000)]
    ev.reclaims = [Reclaim(30, 30, "batch", "direct", T0 + 30 * MS, T0 + 180 * MS, 4000, 1)]
    ev.comms.update({10: "payment", 20: "pricing", 30: "batch", 40: "noise"})
    return analyze(ev)


def preemption_only() -> Analysis:
    ev = Evidence(Interval(812, T0, T0 + 1000 * MS))
    ev.add_offcpu([_off(812, 812, 100, 300, p=(4721, 4721, "batch-job")),
                   _off(812, 812, 400, 588, p=(4721, 4721, "batch-job"))])
    ev.comms.update({812: "victim", 4721: "batch-job"})
    return analyze(ev)
