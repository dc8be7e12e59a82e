"""Benchmark: replay wall time / native wall time for the C ledger service (~10k syscalls).

Why: replay is only useful if an incident of minutes replays in minutes. Goal: <= 3x native.

The service (tests/replay/workloads/ledger_svc.c) serves REQUESTS requests from a closed-loop
client on loopback: per request read, clock_gettime (vDSO), getrandom, ledger write, fsync, reply.
The ledger lives on /dev/shm so fsync costs the same little natively as a recorded answer does in
replay (a disk fsync would flatter replay).

Runs: one recording (replay probe attached: the recording overhead), then REPLAYS pairs of a
native run (no recorder) and a replay of that recording with the client and ledger absent,
alternating so that a change in the host's load hits both alike (replay/README.md, "Speed",
explains the compiled hot path, the in-tracee answers and the per-syscall floor on this VM).
Native wall time is from fork to exit of the service process; replay wall time is the whole
ReplayEngine.run() call (fork, exec, the traced run, reaping). The first replay of a loaded log
also prepares it (plans, hashes; cached on the log and shared by later replays): printed
separately. Two more replays for comparison: every event trapped (the in-tracee answers of
replay/intracee.py off) and the compiled hot path off (the Python engine alone). The tracer and the
tracee share one CPU (as replay does by design); numbers are printed, nothing is asserted. The host
may be shared: compare the CPU ratio and the load average printed with it.

    sudo .venv/bin/python bench/replay.py [--requests 2000] [--replays 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "tests" / "replay" / "workloads" / "ledger_svc.c"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _client(port: int, n: int) -> None:
    for _ in range(200):
        try:
            s = socket.create_connection(("127.0.0.1", port))
            break
        except ConnectionRefusedError:
            time.sleep(0.005)
    with s:
        for i in range(n):
            s.sendall(b"pay%06d\n" % i)
            s.recv(200)


def native(exe: str, n: int, ledger: Path) -> float:
    port = _port()
    t0 = time.perf_counter()
    p = subprocess.Popen([exe, str(port), str(ledger), str(n)], stdout=subprocess.DEVNULL)
    _client(port, n)
    p.wait()
    return time.perf_counter() - t0


def recorded(exe: str, n: int, ledger: Path, session: Path, cpu: int) -> tuple[float, list[str], int]:
    from kprobe.replay.record import ReplayRecorder

    port = _port()
    rec = ReplayRecorder(session, cpu=cpu)
    try:
        argv = [exe, str(port), str(ledger), str(n)]
        t0 = time.perf_counter()
        p = rec.start(argv)
        c = threading.Thread(target=_client, args=(port, n))
        c.start()
        p.wait()
        wall = time.perf_counter() - t0
        c.join()
    finally:
        rec.stop()
    return wall, argv, p.pid


def _cpu() -> float:
    """CPU seconds of this process (tracer, client thread) and its reaped children (service, tracee)."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000, help="requests (~5 syscalls each; default %(default)s)")
    ap.add_argument("--replays", type=int, default=3)
    ap.add_argument("--cpu", type=int, default=0)
    args = ap.parse_args()
    from kprobe.replay import log as rlog
    from kprobe.replay.engine import ReplayEngine

    load_before = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="kprobe-bench-replay-"))
    shm = Path(tempfile.mkdtemp(prefix="kprobe-bench-ledger-", dir="/dev/shm"))
    try:
        exe = str(tmp / "ledger_svc")
        subprocess.run(["cc", "-O2", "-o", exe, str(SOURCE)], check=True)
        os.sched_setaffinity(0, {args.cpu})  # the client shares the CPU natively too
        native(exe, args.requests, shm / "warm.log")  # page cache, loader: not counted
        rec_wall, argv, pid = recorded(exe, args.requests, shm / "rec.log", tmp / "session", args.cpu)
        log = rlog.load(tmp / "session", pid)
        (shm / "rec.log").unlink()
        t0 = time.perf_counter()
        first = ReplayEngine(log, argv, cpu=args.cpu).run()  # prepares the log (cached for the rest)
        first_wall = time.perf_counter() - t0
        # native and replay runs alternate, so a change in the host's load hits both alike
        natives, native_cpu, results, cpu_s, replay_walls = [], [], [], [], []
        for i in range(args.replays):
            before = _cpu()
            natives.append(native(exe, args.requests, shm / f"n{i}.log"))
            native_cpu.append(_cpu() - before)
            before = _cpu()
            t0 = time.perf_counter()
            results.append(ReplayEngine(log, argv, cpu=args.cpu).run())
            replay_walls.append(time.perf_counter() - t0)
            cpu_s.append(_cpu() - before)
        t0 = time.perf_counter()
        trapped = ReplayEngine(log, argv, cpu=args.cpu, in_tracee=False).run()
        trapped_wall = time.perf_counter() - t0
        t0 = time.perf_counter()
        python_only = ReplayEngine(log, argv, cpu=args.cpu, fast=False).run()
        python_wall = time.perf_counter() - t0
        r0 = results[0]
        nat = statistics.median(natives)
        rep = statistics.median(replay_walls)
        print(f"syscalls recorded after exec: {len(log.events)}  (trapped and answered: {r0.events_total}, "
              f"stops (ptrace stops and seccomp notifications): {r0.stops})")
        print(f"outcome: {r0.outcome}, outputs identical: {r0.outputs_identical}; answered by the compiled hot "
              f"path: {r0.fast_events} of {r0.events_replayed} events, hot syscalls via {r0.hot_syscalls}; "
              f"syscalls and clock reads answered in the tracee without a stop: {r0.tracee_answers}")
        print(f"native wall:   {nat * 1000:8.1f} ms  (median of {len(natives)}: "
              f"{', '.join(f'{x * 1000:.1f}' for x in natives)})")
        print(f"recorded wall: {rec_wall * 1000:8.1f} ms  (replay probe attached: {rec_wall / nat:.2f}x native)")
        print(f"replay wall:   {rep * 1000:8.1f} ms  (median of {len(replay_walls)}: "
              f"{', '.join(f'{x * 1000:.1f}' for x in replay_walls)})")
        print(f"replay / native = {rep / nat:.2f}x  (goal <= 3x); {rep / max(r0.events_replayed, 1) * 1e6:.1f} us wall "
              "per answered event")
        print(f"first replay of the log: {first_wall * 1000:.1f} ms (includes preparing the log once: "
              f"{first_wall / nat:.2f}x native); outcome {first.outcome}")
        print(f"every event trapped (no in-tracee answers, compiled hot path on): {trapped_wall * 1000:.1f} ms = "
              f"{trapped_wall / nat:.2f}x native, {trapped.stops} stops, {trapped_wall / max(trapped.stops, 1) * 1e6:.1f} "
              f"us wall per stop, outcome {trapped.outcome}")
        print(f"Python engine only (hot path off): {python_wall * 1000:.1f} ms = {python_wall / nat:.2f}x native, "
              f"outcome {python_only.outcome}")
        cpu = statistics.median(cpu_s)
        ncpu = statistics.median(native_cpu)
        print(f"native CPU (service + client): {ncpu * 1000:.1f} ms; replay CPU / native CPU = {cpu / ncpu:.2f}x "
              "(less sensitive to the host's load than wall time)")
        print(f"replay CPU (tracer + tracee): {cpu * 1000:.1f} ms = {cpu / max(r0.events_replayed, 1) * 1e6:.1f} us "
              "per answered event; "
              f"load average {load_before:.1f} at start, {os.getloadavg()[0]:.1f} now on {os.cpu_count()} CPUs (wall numbers include waiting "
              "for the CPU when the host is busy)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(shm, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
