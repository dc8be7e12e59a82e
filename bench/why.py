"""Benchmark: latency of ``why`` (fetch + analyze) on demo-sized data and with 10M stored events.

Why: `kprobe why` and the incident pipeline call ``why`` per slow operation; the
product promise is an answer in <= 100 ms median on demo-sized data and <= 1 s
when the store holds 10M events. This script PRINTS both numbers.

How (needs root: the incident is captured from the real kernel):

1. A real two-hop incident is recorded with the embedded recorder (the same
   session `kprobe record` runs): a client sends one request over loopback TCP to
   an uninstrumented server whose work is preempted by a CPU hog pinned to its
   CPU (SCHED_RR, like tests/causal/test_why_faults_kernel.py). ``why`` on the
   client over its request window walks client -> server -> hog, which exercises
   every query round of fetch.py (victim, socket peers, wakers).
2. ``why`` is timed --calls times on that store: the "demo" median.
3. Background rows are written through the real ``ChdbStore.write`` path, in 1M
   batches converted by the agent's converters (``BY_NAME[t].columns``): off-CPU
   intervals, syscalls and socket I/O from a few hundred threads of ~40 other
   processes (bench/chdb_ingest.py's synthetic trading host), spread over
   --span-s seconds centred on the incident, until --events rows are stored.
   Batches are written in time order, each covering its own slice of the span,
   as a recorder's flushes do (a batch spread over the whole span would make
   every part, and every granule of it, cover all of the time).
4. ``why`` is timed again on the same incident inside the big store, and its
   answer must be the same as before (background rows must not change it).

Usage: sudo python3 bench/why.py [--events 10000000] [--span-s 600] [--calls 25] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chdb_ingest import make_offcpu, make_population, make_syscall  # noqa: E402

from kprobe.causal.fetch import fetch_evidence  # noqa: E402
from kprobe.causal.why import why  # noqa: E402
from kprobe.schemas import layouts as L  # noqa: E402
from kprobe.schemas.tables import BY_NAME  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RPC = REPO / "tests" / "workloads" / "causal_rpc.py"
HOG = "import time\ne=time.monotonic()+{s}\nwhile time.monotonic()<e: pass"
GOAL_DEMO_MS = 100.0
GOAL_BIG_MS = 1000.0
PID_BASE = 3_000_000        # background pids far from real ones (pid_max is 4194304)
BATCH = 1_000_000
SHARES = {"syscall": 0.5, "offcpu": 0.4, "sock_io": 0.1}


def capture_incident(data: Path) -> tuple[int, int, int, dict]:
    """Record the two-hop incident; returns (client pid, t0, t1, facts) with the store closed."""
    from kprobe.agent.probeset import ProbeConfig
    from kprobe.agent.recorder import RecorderConfig
    from kprobe.embedded import EmbeddedSession

    subprocess.run(["make", "-s", "-C", str(REPO / "probes")], check=True)
    cpus = sorted(os.sched_getaffinity(0))
    ccpu, scpu = cpus[0], cpus[-1]
    probes = ProbeConfig(filter_on=True, min_offcpu_ns=20_000, fault_sample_every=64)
    s = EmbeddedSession(data, RecorderConfig(probes=probes, flush_ms=250)).start()

    def spawn(*argv: str) -> subprocess.Popen:
        p = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        s.recorder.watch_pid(p.pid)
        assert p.stdin is not None
        p.stdin.write(b"go\n")
        p.stdin.flush()
        return p

    hog = subprocess.Popen(["chrt", "-r", "10", "taskset", "-c", str(scpu), sys.executable, "-c", HOG.format(s=4)])
    try:
        server = spawn("chrt", "-r", "10", sys.executable, str(RPC), "server", str(scpu), "300")
        port = int(server.stdout.readline())  # type: ignore[union-attr]
        client = spawn(sys.executable, str(RPC), "client", str(ccpu), str(port))
        cpid, t0, t1 = (int(x) for x in client.communicate(timeout=30)[0].split())
        spid, s_wall, s_cpu = (int(x) for x in server.communicate(timeout=30)[0].split())
    finally:
        hog.kill()
        hog.wait(5)
        s.recorder.wait_drained(60.0)
        s.stop()
    return cpid, t0, t1, {"server": spid, "hog": hog.pid, "server_preempted_ns": s_wall - s_cpu}


def _shift(r: np.ndarray, fields: tuple[str, ...], start_ns: int, span_ns: int, rng: np.random.Generator) -> None:
    """Spread records uniformly over [start, start + span) (monotonic ns), keeping each one's durations."""
    base = r[fields[0]].astype(np.int64)
    new = start_ns + np.sort(rng.integers(0, span_ns, len(r)))
    delta = new - base
    for f in fields:
        v = r[f].astype(np.int64)
        r[f] = np.where(v == 0, 0, v + delta).astype(np.uint64)


def make_sock_io(rng: np.random.Generator, pop, n: int) -> np.ndarray:
    """KP_SOCK_IO records: loopback and LAN connections of the same threads, sends and receives."""
    r = np.zeros(n, dtype=L.KP_SOCK_IO)
    who = rng.choice(len(pop.tids), size=n, p=pop.weights)
    r["tgid"], r["tid"] = pop.tgids[who], pop.tids[who]
    r["skaddr"] = 0xFFFF_8880_0000_0000 + who.astype(np.uint64) * 4096
    r["bytes"] = rng.integers(1, 65536, n)
    r["srtt_us"] = rng.integers(20, 2000, n)
    r["sport"] = 20000 + who % 30000
    r["dport"] = rng.choice(np.array([5432, 6379, 9092, 8080, 443]), size=n)
    r["family"] = 2
    r["dir"] = rng.integers(0, 2, n)
    r["protocol"] = 6
    r["saddr"][:, :4] = [10, 0, 0, 5]
    r["daddr"][:, :4] = [10, 0, 0, 7]
    r["ts_ns"] = np.arange(n, dtype=np.uint64)
    return r


def fill_background(store, events: int, start_utc: int, span_ns: int, seed: int = 7) -> dict[str, int]:
    """Write ``events`` synthetic rows through ChdbStore.write, centred on ``start_utc``; returns rows per table."""
    rng = np.random.default_rng(seed)
    pop = make_population(rng)
    pop.tgids = pop.tgids + np.uint32(PID_BASE)
    pop.tids = pop.tids + np.uint32(PID_BASE)
    mono_start = 10_000_000_000_000          # any monotonic reading; the offset maps it to UTC
    offset = start_utc - span_ns // 2 - mono_start
    gens = {"syscall": (make_syscall, ("enter_ns", "exit_ns")),
            "offcpu": (make_offcpu, ("off_ns", "wake_ns", "on_ns")),
            "sock_io": (make_sock_io, ("ts_ns",))}
    written: dict[str, int] = {}
    for table, share in SHARES.items():
        make, fields = gens[table]
        todo = int(events * share)
        batches = max(1, -(-todo // BATCH))
        step = span_ns // batches
        k = 0
        while todo > 0:
            n = min(BATCH, todo)
            rec = make(rng, pop, n)
            # as a recorder writes: each write holds the events of its own stretch of time, in time order
            _shift(rec, fields, mono_start + k * step, step, rng)
            k += 1
            cols = BY_NAME[table].columns(rec, offset)
            cols["host"] = np.full(n, "bench-host", dtype=object)
            cols["service"] = np.full(n, "", dtype=object)
            written[table] = written.get(table, 0) + store.write(table, cols)
            todo -= n
    return written


def _host_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot (/proc/stat): how loaded the shared host was meanwhile."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


@dataclass
class Timing:
    median_ms: float
    max_ms: float
    cpu_median_ms: float      # this process's CPU time per call (chDB threads included): load-independent cost
    host_busy_pct: float
    queries: int
    answer: dict


def time_why(store, pid: int, t0: int, t1: int, calls: int) -> Timing:
    """Wall and CPU ms of ``why`` over ``calls`` calls, the host's busy % meanwhile, and the last answer."""
    times, cpu = [], []
    a = None
    b0, n0 = _host_jiffies()
    for _ in range(calls):
        s, c = time.perf_counter(), time.process_time()
        a = why(store, pid, t0, t1)
        times.append((time.perf_counter() - s) * 1000)
        cpu.append((time.process_time() - c) * 1000)
    b1, n1 = _host_jiffies()
    assert a is not None
    ev = fetch_evidence(store, a.interval)
    return Timing(statistics.median(times), max(times), statistics.median(cpu),
                  100.0 * (b1 - b0) / max(n1 - n0, 1), ev.queries, a.to_json())


def _answer(js: dict) -> tuple:
    rc = js["root_cause"] or {}
    return (rc.get("kind"), (rc.get("culprit") or {}).get("pid"), [c["kind"] for c in js["chain"]])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=10_000_000, help="background rows to store (default %(default)s)")
    ap.add_argument("--span-s", type=float, default=600.0, help="seconds the background covers (default %(default)s)")
    ap.add_argument("--calls", type=int, default=25, help="why() calls per measurement (default %(default)s)")
    ap.add_argument("--data", type=Path, default=None, help="work directory (default: a temporary one)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/why.py records a real incident: run as root", file=sys.stderr)
        return 2
    from kprobe.sinks.chdb_store import ChdbStore

    with tempfile.TemporaryDirectory(prefix="kprobe-why-bench-") as tmp:
        data = args.data or Path(tmp) / "data"
        pid, t0, t1, facts = capture_incident(data)
        store = ChdbStore(data)
        try:
            demo_rows = sum(int(r["n"]) for r in store.query_rows(
                "SELECT sum(rows) AS n FROM system.parts WHERE active AND database = currentDatabase()"))
            why(store, pid, t0, t1)              # first query of a session pays chDB's warm-up once
            demo = time_why(store, pid, t0, t1, args.calls)
            w0 = time.perf_counter()
            written = fill_background(store, args.events, (t0 + t1) // 2, int(args.span_s * 1e9))
            fill_s = time.perf_counter() - w0
            big_rows = sum(int(r["n"]) for r in store.query_rows(
                "SELECT sum(rows) AS n FROM system.parts WHERE active AND database = currentDatabase()"))
            why(store, pid, t0, t1)
            big = time_why(store, pid, t0, t1, args.calls)
        finally:
            store.close()
    same = _answer(demo.answer) == _answer(big.answer)

    def row(t: Timing, rows: int, goal: float) -> dict:
        return {"stored_rows": rows, "median_ms": round(t.median_ms, 2), "max_ms": round(t.max_ms, 2),
                "cpu_median_ms": round(t.cpu_median_ms, 2), "host_busy_pct": round(t.host_busy_pct, 1),
                "sql_statements": t.queries, "goal_ms": goal, "ok": t.median_ms <= goal}

    out = {
        "incident": {"client": pid, "window_ms": (t1 - t0) / 1e6, **facts, "answer": _answer(demo.answer)},
        "demo": row(demo, demo_rows, GOAL_DEMO_MS),
        "big": {**row(big, big_rows, GOAL_BIG_MS), "background_rows": written, "fill_s": round(fill_s, 1),
                "same_answer": same},
        "calls": args.calls,
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"incident: client PID {pid} window {(t1 - t0) / 1e6:.0f} ms -> {_answer(demo.answer)} "
              f"(server {facts['server']}, hog {facts['hog']})")
        for name, t, rows, goal in (("demo data", demo, demo_rows, GOAL_DEMO_MS), ("big store", big, big_rows,
                                                                                   GOAL_BIG_MS)):
            print(f"why on {name} ({rows:,} rows): median {t.median_ms:.1f} ms (goal <= {goal:.0f} ms) "
                  f"{'OK' if t.median_ms <= goal else 'MISSED'}, max {t.max_ms:.1f} ms, CPU {t.cpu_median_ms:.1f} ms/call, "
                  f"{t.queries} SQL statements, host {t.host_busy_pct:.0f}% busy meanwhile")
        print(f"background written through ChdbStore.write in {fill_s:.1f} s: {written}; same answer: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
