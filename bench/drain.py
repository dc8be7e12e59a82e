"""Ring-buffer drain benchmarks on this machine's real kernel (root).

1. Backlog drain, side by side: fill a 256 MiB syscall ring with real events
   (a C program doing write(2) to /dev/null, nothing drains meanwhile), then time
   draining it with libbpf's ring_buffer__consume (bench/drain/ref_consumer.c,
   one callback + copy per record) and, after an identical refill, with the
   agent's numpy drain (agent/ringbuf.py). Both copy every record out.
2. Sustained rate: the full recorder (all probes, chDB store) watching a load
   generator that issues write(2) at a fixed rate; steps up the rate and reports,
   per step, events stored, kernel drops and the recorder process's CPU%.

    sudo .venv/bin/python bench/drain.py [--json] [--rates 50000,100000,...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BUILD = HERE / "build"


def build() -> tuple[Path, Path]:
    BUILD.mkdir(exist_ok=True)
    ref, load = BUILD / "ref_consumer", BUILD / "load"
    subprocess.run(["cc", "-O2", "-o", str(ref), str(HERE / "drain" / "ref_consumer.c"), "-lbpf"], check=True)
    subprocess.run(["cc", "-O2", "-o", str(load), str(HERE / "drain" / "load.c")], check=True)
    return ref, load


def fill(probes, load: Path, count: int) -> None:
    p = subprocess.Popen([str(load), "0", "0", str(count)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    probes.watch_pid(p.pid)
    out, _ = p.communicate(b"go\n", timeout=120)
    assert int(out) == count


def backlog(ref: Path, load: Path, count: int, rounds: int) -> dict:
    from kprobe.agent.probeset import ProbeConfig, ProbeSet
    from kprobe.agent.ringbuf import RingReader
    from kprobe.schemas.tables import BY_NAME

    ring = 256 << 20
    cfg = ProbeConfig(probes=("syscalls",), syscalls=["write"], filter_on=True, ring_overrides={"syscall": ring})
    probes = ProbeSet(cfg).open()
    et = BY_NAME["syscall"]
    m = probes.ring_map(et)
    reader = RingReader(m.fd, m.max_entries, et.record, et.name)
    c_rates, np_rates, fresh_rates = [], [], []
    buf = np.zeros(count + 4096, dtype=et.record)  # pre-faulted, as ref_consumer.c memsets its buffer
    try:
        for _ in range(rounds):
            fill(probes, load, count)
            out = subprocess.run([str(ref), str(m.fd), str(ring)], pass_fds=[m.fd], capture_output=True,
                                 text=True, check=True).stdout.split()
            n_c, ns_c = int(out[0]), int(out[2])
            fill(probes, load, count)
            t0 = time.perf_counter_ns()
            recs = reader.drain(max_records=1 << 30, out=buf)
            ns_np = time.perf_counter_ns() - t0
            fill(probes, load, count)
            t0 = time.perf_counter_ns()
            fresh = reader.drain(max_records=1 << 30)
            ns_fresh = time.perf_counter_ns() - t0
            assert min(len(recs), len(fresh), n_c) >= count, (len(recs), len(fresh), n_c)
            c_rates.append(n_c / ns_c * 1e9)
            np_rates.append(len(recs) / ns_np * 1e9)
            fresh_rates.append(len(fresh) / ns_fresh * 1e9)
        drops = int(probes.drops()[et.type_id].sum())
    finally:
        reader.close()
        probes.close()
    c_med, np_med = statistics.median(c_rates), statistics.median(np_rates)
    return {
        "records_per_round": count, "rounds": rounds, "kernel_drops": drops,
        "libbpf_ring_buffer__consume_events_per_s": round(c_med),
        "numpy_drain_events_per_s": round(np_med),
        "ratio": round(np_med / c_med, 2),
        "numpy_drain_fresh_buffer_events_per_s": round(statistics.median(fresh_rates)),
    }


def cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def sustained(load: Path, rates: list[int], seconds: float) -> list[dict]:
    from kprobe.agent.probeset import ProbeConfig
    from kprobe.agent.recorder import RecorderConfig
    from kprobe.embedded import EmbeddedSession

    results = []
    for rate in rates:
        tmp = Path(tempfile.mkdtemp(prefix="kp-bench-"))
        try:
            cfg = RecorderConfig(probes=ProbeConfig(filter_on=True))
            session = EmbeddedSession(tmp, cfg).start()
            p = subprocess.Popen([str(load), str(rate), str(seconds)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            session.recorder.watch_pid(p.pid)
            c0, w0 = cpu_s(), time.monotonic()
            out, _ = p.communicate(b"go\n", timeout=seconds * 10 + 30)
            session.recorder.wait_drained(30)
            c1, w1 = cpu_s(), time.monotonic()
            session.stop()
            st = session.recorder.stats
            calls = int(out)
            results.append({
                "target_rate": rate,
                "achieved_rate": round(calls / seconds),
                "syscall_events_stored": st.written.get("syscall", 0),
                "expected_write_events": calls,
                "kernel_drops": sum(sum(v) for v in st.kernel_drops.values()),
                "write_errors": sum(st.write_errors.values()),
                "agent_cpu_percent": round(100 * (c1 - c0) / (w1 - w0), 1),
            })
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--backlog-records", type=int, default=3_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rates", default="50000,100000,200000,400000")
    ap.add_argument("--seconds", type=float, default=4.0)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/drain.py attaches eBPF probes: run it as root")
        return 2
    ref, load = build()
    res = {
        "backlog": backlog(ref, load, args.backlog_records, args.rounds),
        "sustained": sustained(load, [int(r) for r in args.rates.split(",")], args.seconds),
    }
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    b = res["backlog"]
    print(f"backlog drain ({b['records_per_round']} records x {b['rounds']} rounds, median):")
    print(f"  libbpf ring_buffer__consume (C) {b['libbpf_ring_buffer__consume_events_per_s']:>12,} events/s")
    print(f"  numpy drain (agent)             {b['numpy_drain_events_per_s']:>12,} events/s   ratio {b['ratio']}x")
    print(f"  numpy drain, fresh allocation   {b['numpy_drain_fresh_buffer_events_per_s']:>12,} events/s")
    print("sustained (full recorder, chDB store):")
    print(f"  {'target/s':>9} {'achieved/s':>10} {'stored':>9} {'expected':>9} {'drops':>6} {'agent CPU%':>10}")
    for r in res["sustained"]:
        print(f"  {r['target_rate']:>9} {r['achieved_rate']:>10} {r['syscall_events_stored']:>9} "
              f"{r['expected_write_events']:>9} {r['kernel_drops']:>6} {r['agent_cpu_percent']:>10}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
