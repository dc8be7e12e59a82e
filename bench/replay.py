"""Benchmark: what replayable recording and replay cost, for a single-threaded and a 4-worker service.

Why: replay is only useful if an incident of minutes replays in minutes (goal: replay <= 3x the
native run), and recording replayably is only usable if the service still runs at close to its
normal speed (goal: <= 1.5x native wall time) and other processes do not pay for it.

Workloads (tests/workloads/replay/, served to tests/workloads/replay/msg_client.c, a C client
process of its own: a Python client thread in this process would share its interpreter lock with
the recorder's drain thread and charge that to the recording):

* ``ledger``: ledger_svc.c, one thread; per request read, clock_gettime (vDSO), getrandom, ledger
  write, fsync, reply; closed loop (one request outstanding).
* ``pool4``: pool_svc.c with 4 workers sharing the connection and a sequence counter under a
  pthread mutex (plus futex hand-overs between them); 4 requests outstanding.

The journals live on /dev/shm so fsync costs the same little natively as a recorded answer does in
replay (a disk fsync would flatter replay). Service and client are pinned to one CPU (--cpu), as
the tracer and the tracee share one in replay.

Per workload: REPLAYS rounds of [native run, native run serialized, recorded run, replay of the
first recording], alternating so that a change in the host's load hits all alike. "Serialized" is
the service run the way a replayable recording runs it (replay/serialize.py: one CPU, SCHED_RR)
without any probe: recorded / serialized is what the probes cost; serialized / native what the
serialization costs (on a busy host a real-time service is *faster* than a normal one, so the
probes' cost is the ratio to read). Wall times are from the service's exec to its exit (the
recorder's one-time set-up per process, fork, exec and the vDSO patched at the exec stop
(replay/vdso_exec.py), is printed separately). The probes' own cost per run is from the kernel's
BPF statistics (kernel.bpf_stats_enabled during the recorded runs; the syscall programs run for every syscall on
the host and return at once for processes not recorded), and the service's CPU time per recorded
syscall from its rusage. Numbers are printed, nothing is asserted.

    sudo .venv/bin/python bench/replay.py [--requests 2000] [--replays 3] [--only ledger|pool4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORKLOADS = REPO / "tests" / "workloads" / "replay"


@dataclass
class Workload:
    name: str
    source: str
    argv: Callable[[str, int, Path, int], list[str]]   # (exe, port, journal, requests)
    msg_size: int
    window: int
    note: str


WORKLOADS_RUN = (
    Workload("ledger", "ledger_svc.c", lambda exe, port, j, n: [exe, str(port), str(j), str(n)], 12, 1,
             "1 thread, closed loop"),
    Workload("pool4", "pool_svc.c", lambda exe, port, j, n: [exe, str(port), str(j), str(n), "4", "shared"], 16, 4,
             "4 workers, shared connection + mutex, 4 requests outstanding"),
)


@dataclass
class Run:
    wall: float
    cpu: float          # the service's user + system time


@dataclass
class Results:
    native: list[Run] = field(default_factory=list)
    serialized: list[Run] = field(default_factory=list)
    recorded: list[Run] = field(default_factory=list)
    setup: list[float] = field(default_factory=list)
    replay: list[float] = field(default_factory=list)
    replay_cpu: list[float] = field(default_factory=list)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _build(tmp: Path) -> dict[str, str]:
    out = {}
    for src in ("ledger_svc.c", "pool_svc.c", "msg_client.c"):
        exe = tmp / src[:-2]
        subprocess.run(["cc", "-O2", "-pthread", "-o", str(exe), str(WORKLOADS / src)], check=True)
        out[src] = str(exe)
    return out


def _finish(pid: int, t0: float, client: subprocess.Popen) -> Run:
    """Wait for the client, then for the service (its rusage)."""
    if client.wait(120) != 0:
        raise RuntimeError(f"client failed: {client.returncode}")
    _, status, ru = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"service failed: {status:#x}")
    return Run(wall, ru.ru_utime + ru.ru_stime)


def _client(bins: dict[str, str], w: Workload, port: int, n: int) -> subprocess.Popen:
    return subprocess.Popen([bins["msg_client.c"], str(port), str(n), str(w.msg_size), str(w.window)])


def native(bins: dict[str, str], w: Workload, n: int, journal: Path, serialized_cpu: int | None) -> Run:
    from kprobe.replay.serialize import serialize_thread

    port = _port()
    pre = (lambda: serialize_thread(0, serialized_cpu)) if serialized_cpu is not None else None
    p = subprocess.Popen(w.argv(bins[w.source], port, journal, n), stdout=subprocess.DEVNULL, preexec_fn=pre)
    t0 = time.perf_counter()  # Popen returns once the exec succeeded: timed from there, as the recorded run is
    return _finish(p.pid, t0, _client(bins, w, port, n))


def recorded(session: Path, cpu: int, bins: dict[str, str], w: Workload, n: int,
             journal: Path) -> tuple[Run, float, list[str], int, dict[str, tuple[int, int]]]:
    """One recorded run (its own recorder: a log is complete once the recorder stopped, see
    replay/log_masking.py) and the probes' run counts and times during it."""
    from kprobe.replay.record import ReplayRecorder

    rec = ReplayRecorder(session, cpu=cpu)
    try:
        port = _port()
        argv = w.argv(bins[w.source], port, journal, n)
        before = _prog_stats(rec)
        t0 = time.perf_counter()
        p = rec.start(argv, stdout_pipe=True)  # forks, lets it exec, patches its vDSO at the exec stop
        t1 = time.perf_counter()
        run = _finish(p.pid, t1, _client(bins, w, port, n))
        after = _prog_stats(rec)
        if p.stdout is not None:
            p.stdout.close()
    finally:
        rec.stop()
    stats = {name: (t - before.get(name, (0, 0))[0], c - before.get(name, (0, 0))[1]) for name, (t, c) in after.items()}
    drain = getattr(rec.capture, "drain_cpu_s", None)  # the drain thread's CPU, off the recorded CPU
    if drain is not None:
        stats["(drain thread CPU)"] = (int(drain * 1e9), n)
    return run, t1 - t0, argv, p.pid, stats


def _prog_stats(rec) -> dict[str, tuple[int, int]]:  # noqa: ANN001 - a ReplayRecorder
    """Program name -> (run time ns, runs) of every program this recorder loaded (the sched
    object's, which run host-wide, as well as the replay stream's), read from the kernel by fd:
    another recorder on the host (other engineers' tests) is not counted."""
    import ctypes

    import numpy as np

    from kprobe.agent.libbpf import PROG_INFO

    out: dict[str, tuple[int, int]] = {}
    for obj in [*rec.probes.objects.values(), rec.capture.obj]:
        for prog in obj.programs():
            fd = int(prog.lib.lib.bpf_program__fd(prog.ptr))
            if fd < 0:
                continue  # not loaded (autoload off)
            info = np.zeros(1, dtype=PROG_INFO)
            size = ctypes.c_uint32(PROG_INFO.itemsize)
            if prog.lib.lib.bpf_obj_get_info_by_fd(fd, info.ctypes.data, ctypes.byref(size)) == 0:
                out[prog.name] = (int(info["run_time_ns"][0]), int(info["run_cnt"][0]))
    return out


def _ms(xs: list[float]) -> str:
    return ", ".join(f"{x * 1000:.1f}" for x in xs)


def bench(w: Workload, bins: dict[str, str], args: argparse.Namespace, tmp: Path, shm: Path) -> None:
    from kprobe.replay import log as rlog
    from kprobe.replay.engine import ReplayEngine

    n = args.requests
    res = Results()
    native(bins, w, n, shm / f"{w.name}-warm.log", None)  # page cache, loader: not counted
    stats_run: dict[str, tuple[int, int]] = {}
    log = argv0 = None
    if True:
        for i in range(args.replays):
            res.native.append(native(bins, w, n, shm / f"{w.name}-n{i}.log", None))
            res.serialized.append(native(bins, w, n, shm / f"{w.name}-s{i}.log", args.cpu))
            session = tmp / f"{w.name}-session{i}"
            run, setup, argv, pid, stats = recorded(session, args.cpu, bins, w, n, shm / f"{w.name}-r{i}.log")
            for k, (t, c) in stats.items():
                tt, cc = stats_run.get(k, (0, 0))
                stats_run[k] = (tt + t, cc + c)
            res.recorded.append(run)
            res.setup.append(setup)
            if log is None:
                log, argv0 = rlog.load(session, pid), argv
                ReplayEngine(log, argv0, cpu=args.cpu).run()  # prepares the log once (cached)
            before = os.times()
            t0 = time.perf_counter()
            r = ReplayEngine(log, argv0, cpu=args.cpu).run()
            res.replay.append(time.perf_counter() - t0)
            after_t = os.times()
            res.replay_cpu.append(sum(after_t[:4]) - sum(before[:4]))
            if r.outcome != "identical":
                print(f"  replay {i}: {r.outcome} {r.divergences[:1]} {r.notes[-2:]}")
        if args.compare:
            for label, kw in (("every event trapped (no in-tracee answers)", {"in_tracee": False}),
                              ("Python engine only (compiled hot path off)", {"fast": False})):
                t0 = time.perf_counter()
                c = ReplayEngine(log, argv0, cpu=args.cpu, **kw).run()
                took = time.perf_counter() - t0
                print(f"  {label}: {took * 1000:.1f} ms, {c.stops} stops, {took / max(c.stops, 1) * 1e6:.1f} us "
                      f"wall per stop, outcome {c.outcome}")
    assert log is not None
    rsys = [e for e in log.events]
    med = lambda runs: statistics.median(x.wall for x in runs)  # noqa: E731
    cpu = lambda runs: statistics.median(x.cpu for x in runs)  # noqa: E731
    nat, ser, recw, rep = med(res.native), med(res.serialized), med(res.recorded), statistics.median(res.replay)
    print(f"== {w.name}: {w.note}; {n} requests; {len(rsys)} syscalls + clock reads recorded after exec "
          f"({len({e.tid for e in rsys})} threads); replays: {r.outcome}, {r.events_replayed}/{r.events_total} events, "
          f"{r.stops} stops, {r.tracee_answers} answered in the tracee, {r.fast_events} by the compiled loop")
    print(f"native wall:      {nat * 1000:7.1f} ms  ({_ms([x.wall for x in res.native])}); service CPU "
          f"{cpu(res.native) * 1000:.1f} ms")
    print(f"serialized wall:  {ser * 1000:7.1f} ms  ({_ms([x.wall for x in res.serialized])}) = {ser / nat:.2f}x native "
          f"(one CPU, SCHED_RR, no probes); service CPU {cpu(res.serialized) * 1000:.1f} ms")
    print(f"recorded wall:    {recw * 1000:7.1f} ms  ({_ms([x.wall for x in res.recorded])}) = {recw / nat:.2f}x native, "
          f"{recw / ser:.2f}x serialized (goal <= 1.5x); service CPU {cpu(res.recorded) * 1000:.1f} ms = "
          f"{(cpu(res.recorded) - cpu(res.serialized)) / len(rsys) * 1e6:+.2f} us per recorded event vs serialized")
    print(f"recorder set-up per process (fork, exec, vDSO patched at the exec stop): {_ms(res.setup)} ms")
    print(f"replay wall:      {rep * 1000:7.1f} ms  ({_ms(res.replay)}) = {rep / nat:.2f}x native (goal <= 3x); "
          f"tracer + tracee CPU {statistics.median(res.replay_cpu) * 1000:.1f} ms")
    runs = args.replays
    for k in sorted(stats_run):
        t, c = stats_run[k]
        if k.startswith("("):
            print(f"  drain thread CPU: {t / runs / 1e6:.2f} ms per recorded run ({t / c:.0f} ns per request), "
                  "on the CPUs the service does not use")
        elif c:
            print(f"  probe {k:22s} {c / runs:9.0f} runs per recorded run, {t / c:5.0f} ns/run, "
                  f"{t / runs / 1e6:6.2f} ms per recorded run")
    counters = log.meta.get("counters", {})
    data = sum(sum(len(b) for b in e.regions.values()) for e in rsys)
    print(f"  captured payload: {data / max(len(rsys), 1):.0f} bytes per event (only what each call returned); "
          f"uprobe hits in other processes: {counters.get('uprobe_hits_other_processes', '?')}; drops: "
          f"{counters.get('rsys_drops', '?')}/{counters.get('rdata_drops', '?')}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000, help="requests per run (default %(default)s)")
    ap.add_argument("--replays", type=int, default=3, help="rounds per workload (default %(default)s)")
    ap.add_argument("--cpu", type=int, default=0)
    ap.add_argument("--only", choices=[w.name for w in WORKLOADS_RUN])
    ap.add_argument("--compare", action="store_true", help="also replay with every event trapped, and in Python only")
    args = ap.parse_args()
    # run statistics held on by an fd (released with the process), not the sysctl: an overlapping
    # bench restoring the sysctl must not switch ours off, nor ours leave it on (bench/overhead.py)
    from overhead import enable_stats_fd  # bench/ is on sys.path when run as a script

    stats_fd = enable_stats_fd()
    if stats_fd < 0:
        raise SystemExit("bench/replay.py: BPF_ENABLE_STATS is not available (kernel < 5.8?)")
    tmp = Path(tempfile.mkdtemp(prefix="kprobe-bench-replay-"))
    shm = Path(tempfile.mkdtemp(prefix="kprobe-bench-ledger-", dir="/dev/shm"))
    load = os.getloadavg()[0]
    try:
        bins = _build(tmp)
        os.sched_setaffinity(0, {args.cpu})  # the client shares the CPU, natively too
        for w in WORKLOADS_RUN:
            if args.only in (None, w.name):
                bench(w, bins, args, tmp, shm)
    finally:
        os.close(stats_fd)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(shm, ignore_errors=True)
    print(f"load average {load:.1f} at start, {os.getloadavg()[0]:.1f} at the end, on {os.cpu_count()} CPUs "
          "(other work on the host lengthens every wall time; compare ratios from the same round)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
