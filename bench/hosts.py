"""Benchmark: what joining hosts costs (causal/hosts.py).

1. ``join``: the cross-host socket join and clock-offset estimate over one million socket rows (two hosts,
   request/response connections seen from both ends): in memory (``estimate_skew``: group by swapped
   4-tuple, turns, alignment by bytes, bounds) and through a store (``pair_skew``: the SQL reads of both
   hosts' rows from a chDB store holding them, then the same), CPU seconds (process_time) per million.
2. ``why`` (root): a 3-host chain recorded live: three network namespaces joined by veths, one embedded
   `kprobe record --netns` agent each (one with an artificial skew), client -> middle -> ledger with a
   CPU hog on the ledger's CPU; the cross-host ``why`` of the slowest payment through the three
   recorders' query sockets, timed cold (first call) and warm (median of --calls), with the answer checked.

Usage: sudo python3 bench/hosts.py [--events 1000000] [--calls 5] [--skip-why] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CHAIN = REPO / "tests" / "workloads" / "hosts_chain.py"
HOG = "import time\ne=time.monotonic()+{s}\nwhile time.monotonic()<e: pass"


def synthetic(events: int, conns: int, theta: int, seed: int = 1) -> tuple[list, list]:
    """Request/response rows of ``conns`` connections, ``events`` rows in all (both ends), B = A + theta."""
    from kprobe.causal.hosts import End

    rnd = random.Random(seed)
    a: list = []
    b: list = []
    per = max(1, events // (4 * conns))
    for c in range(conns):
        ca, cb = (f"10.1.{c // 250}.{c % 250 + 1}", 30000 + c), ("10.2.0.1", 7000)
        t = 1_000_000_000 + rnd.randint(0, 10_000_000)
        for _ in range(per):
            req, resp = rnd.randint(20, 200), rnd.randint(20, 400)
            arrive = t + rnd.randint(10_000, 80_000)
            a.append(End(t + rnd.randint(5_000, 30_000), "send", req, *ca, *cb, 1))
            b.append(End(arrive + 5_000 + theta, "recv", req, *cb, *ca, 2))
            back = arrive + rnd.randint(20_000, 500_000)
            b.append(End(back + theta, "send", resp, *cb, *ca, 2))
            done = back + rnd.randint(10_000, 80_000)
            a.append(End(done, "recv", resp, *ca, *cb, 1))
            t = done + rnd.randint(20_000, 1_000_000)
    return a, b


def bench_join(events: int, conns: int) -> dict:
    from kprobe.causal.hosts import SharedSource, estimate_skew, pair_skew
    from kprobe.sinks.chdb_store import ChdbStore

    theta = 2_500_000
    a, b = synthetic(events, conns, theta)
    n = len(a) + len(b)
    c0 = time.process_time()
    est = estimate_skew("a", a, "b", b)
    mem_s = time.process_time() - c0
    assert est is not None and est.lower_ns <= theta <= est.upper_ns, est
    out = {"events": n, "connections": conns, "memory_cpu_s": round(mem_s, 3),
           "memory_cpu_s_per_million": round(mem_s * 1e6 / n, 3), "offset_ns": est.offset_ns, "bound_ns": est.bound_ns}
    with tempfile.TemporaryDirectory() as d:
        store = ChdbStore(Path(d))
        for host, rows in (("a", a), ("b", b)):
            cols = {
                "ts": np.array([r.ts for r in rows], dtype=np.uint64),
                "tgid": np.array([r.tid for r in rows], dtype=np.uint32),
                "tid": np.array([r.tid for r in rows], dtype=np.uint32),
                "dir": np.array([r.dir for r in rows], dtype=object),
                "bytes": np.array([r.bytes for r in rows], dtype=np.uint32),
                "saddr": np.array([r.saddr for r in rows], dtype=object),
                "sport": np.array([r.sport for r in rows], dtype=np.uint16),
                "daddr": np.array([r.daddr for r in rows], dtype=object),
                "dport": np.array([r.dport for r in rows], dtype=np.uint16),
                "host": np.array([host] * len(rows), dtype=object),
            }
            store.write("sock_io", cols)
        lo = min(r.ts for r in a)
        hi = max(r.ts for r in a)
        mid = (lo + hi) // 2
        w0 = time.perf_counter()
        c0 = time.process_time()
        est2 = pair_skew(SharedSource(store), "a", "b", mid - 1, mid + 1)   # rows within ±30 s of the window
        out["store_wall_s"] = round(time.perf_counter() - w0, 3)
        out["store_cpu_s"] = round(time.process_time() - c0, 3)
        out["store_wall_s_per_million"] = round(out["store_wall_s"] * 1e6 / n, 3)
        assert est2 is not None and est2.lower_ns <= theta <= est2.upper_ns, est2
        store.close()
    return out


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def bench_why(calls: int) -> dict:
    """The live 3-host chain through three embedded recorders' sockets."""
    from kprobe.causal.hosts import SeparateSource, why_across
    from kprobe.query.client import RemoteStore

    tag = f"kpb{os.getpid() % 10000}"
    names = ("client", "middle", "ledger")
    ns = {n: f"{tag}-{n}" for n in names}
    r = 100 + os.getpid() % 100
    addr = {"c": f"10.{r}.1.1", "m": f"10.{r}.1.2", "m2": f"10.{r}.2.1", "l": f"10.{r}.2.2"}
    procs: list[subprocess.Popen] = []
    agents: list[subprocess.Popen] = []
    tmp = Path(tempfile.mkdtemp(prefix="kprobe-bench-hosts-"))
    try:
        for n in names:
            _ip("netns", "add", ns[n])
            _ip("-n", ns[n], "link", "set", "lo", "up")
        for i, (x, xa, y, ya) in enumerate((("client", "c", "middle", "m"), ("middle", "m2", "ledger", "l"))):
            va, vb = f"{tag[-4:]}x{i}", f"{tag[-4:]}y{i}"
            _ip("link", "add", va, "netns", ns[x], "type", "veth", "peer", "name", vb, "netns", ns[y])
            _ip("-n", ns[x], "addr", "add", f"{addr[xa]}/30", "dev", va)
            _ip("-n", ns[y], "addr", "add", f"{addr[ya]}/30", "dev", vb)
            _ip("-n", ns[x], "link", "set", va, "up")
            _ip("-n", ns[y], "link", "set", vb, "up")
        for n in names:
            log = (tmp / f"{n}.log").open("ab")
            agents.append(subprocess.Popen(
                [sys.executable, "-m", "kprobe", "record", "--data", str(tmp / n), "--netns", f"/run/netns/{ns[n]}",
                 "--host-name", n, "--sock-flush-ms", "0", "--heartbeat-ms", "300", "--no-otlp",
                 "--clock-skew-ns", "4000000" if n == "middle" else "0"], stdout=log, stderr=subprocess.STDOUT,
                cwd=REPO))
        deadline = time.monotonic() + 120
        while not all("kprobe: recording" in (tmp / f"{n}.log").read_text(errors="replace") for n in names):
            assert time.monotonic() < deadline and all(a.poll() is None for a in agents), "agents did not start"
            time.sleep(0.3)

        def run(n: str, *argv: str, **kw: object) -> subprocess.Popen:
            p = subprocess.Popen(["ip", "netns", "exec", ns[n], *argv], **kw)  # type: ignore[call-overload]
            procs.append(p)
            return p

        led = run("ledger", "taskset", "-c", "1", "chrt", "-r", "40", sys.executable, str(CHAIN), "ledger", addr["l"],
                  "7100", "1", stdout=subprocess.PIPE, text=True)
        assert led.stdout is not None and "listening" in led.stdout.readline()
        mid = run("middle", "taskset", "-c", "0", "chrt", "-r", "40", sys.executable, str(CHAIN), "middle", addr["m"],
                  "7000", addr["l"], "7100", stdout=subprocess.PIPE, text=True)
        assert mid.stdout is not None and "listening" in mid.stdout.readline()
        cli = run("client", "taskset", "-c", "0", "chrt", "-r", "40", sys.executable, str(CHAIN), "client", addr["m"],
                  "7000", "80", "15", stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        h0 = time.time_ns()
        hog = run("ledger", "taskset", "-c", "1", "chrt", "-r", "40", sys.executable, "-c", HOG.format(s=0.35))
        hog.wait(10)
        h1 = time.time_ns()
        out_text, _ = cli.communicate(timeout=120)
        rows = [json.loads(x) for x in out_text.splitlines() if x.startswith("{")]
        slow = max((x for x in rows if x["answered"] >= h0 and x["sent"] <= h1), key=lambda x: x["answered"] - x["sent"])
        time.sleep(1.0)
        src = SeparateSource({n: RemoteStore(tmp / n / "kprobe.sock") for n in names})
        times = []
        cross = None
        for _ in range(1 + calls):
            t0 = time.perf_counter()
            cross = why_across(src, "client", cli.pid, slow["sent"], slow["answered"])
            times.append(time.perf_counter() - t0)
        assert cross is not None
        ok = ([h.host for h in cross.hops] == list(names) and cross.root_cause is not None
              and cross.root_cause.culprit.pid == hog.pid)
        return {"payment_ms": round((slow["answered"] - slow["sent"]) / 1e6, 1), "cold_ms": round(times[0] * 1e3, 1),
                "warm_median_ms": round(statistics.median(times[1:]) * 1e3, 1) if calls else None,
                "warm_max_ms": round(max(times[1:]) * 1e3, 1) if calls else None,
                "chain_right": ok, "hops": [h.host for h in cross.hops],
                "root": cross.root_cause.to_json(with_children=False) if cross.root_cause else None,
                "skews": [s.to_json() for s in cross.skews]}
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        for a in agents:
            if a.poll() is None:
                a.send_signal(signal.SIGINT)
                try:
                    a.wait(60)
                except subprocess.TimeoutExpired:
                    a.kill()
        for n in names:
            subprocess.run(["ip", "netns", "del", ns[n]], capture_output=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--connections", type=int, default=200)
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--skip-why", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    res = {"join": bench_join(args.events, args.connections)}
    if not args.skip_why:
        if os.geteuid() != 0:
            print("the why part needs root (network namespaces, probes); use --skip-why", file=sys.stderr)
            return 2
        res["why"] = bench_why(args.calls)
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        j = res["join"]
        print(f"join: {j['events']} socket rows, {j['connections']} connections: in memory {j['memory_cpu_s']} CPU-s "
              f"({j['memory_cpu_s_per_million']} s per million); through chDB {j['store_wall_s']} s wall "
              f"({j['store_wall_s_per_million']} s per million); offset ±{j['bound_ns'] / 1e3:.1f} µs")
        if "why" in res:
            w = res["why"]
            print(f"why, 3-host chain ({w['payment_ms']} ms payment): cold {w['cold_ms']} ms, warm median "
                  f"{w['warm_median_ms']} ms (max {w['warm_max_ms']}), chain right: {w['chain_right']} {w['hops']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
