"""Payload capture on a real database: what it costs pgbench, and what it costs per event and per statement.

Why: the decoders' own cost (bench/decoders.py) says nothing about what a watched service pays once
every read and write of its sockets runs a BPF program and lands in a ring the agent decodes. This
bench starts a PostgreSQL from Debian's binaries (tests/protocols/pg_server.py: the recipe the
kernel tests use, pg_stat_statements loaded, fsync off) and runs pgbench against it at full speed
under each mode, the modes' order rotated per round (pgbench tps is paired within a round: the
host is shared and swings 10-20 % between runs):

* ``off``: nothing attached;
* ``record``: the embedded recorder watching the postmaster (backends followed at fork), as
  ``kprobe record --watch-pid`` runs it, no payload capture;
* ``payload``: the same plus payload capture (``--decode-payloads``) with the default probe
  object: records of exact length through a per-CPU scratch buffer and ``bpf_ringbuf_output``;
* ``payload-classes``: the payload probe built with ``-DKP_PAYLOAD_CLASSES``: ``bpf_ringbuf_reserve``
  of one of four constant sizes, the bytes copied into the ring directly.

Per run: tps (pgbench), this process's CPU time over the pgbench window (the recorder and the
capture run in it; nothing else does), the payload programs' runs and ns per run from the kernel's
BPF statistics (BPF_ENABLE_STATS), records and bytes drained, the fullest the ring was, drops and
statements decoded. Nothing asserts; it prints, --json for tools.

    python bench/payload_kernel.py [--rounds 5] [--seconds 10] [--modes off,record,payload,payload-classes]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "tests" / "protocols"))
sys.path.insert(0, str(BENCH))

from overhead import bpf_snapshot, bpf_stats  # noqa: E402
from pg_server import PgServer, unavailable  # noqa: E402

MODES = ("off", "record", "payload", "payload-classes")


def log(msg: str) -> None:
    print(f"[payload-bench] {msg}", file=sys.stderr, flush=True)


def build_classes_object(out_dir: Path) -> Path:
    """The payload probe with size-class records, beside the default build."""
    import platform

    arch = {"x86_64": "x86", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    subprocess.run(["make", "-s", "-C", str(REPO / "probes")], check=True)
    obj = out_dir / "payload_classes.bpf.o"
    subprocess.run(["clang", "-g", "-O2", "-target", "bpf", f"-D__TARGET_ARCH_{arch}", "-DKP_PAYLOAD_CLASSES",
                    "-Wall", "-Werror", "-Wno-unused-function", "-c", str(REPO / "probes" / "payload.bpf.c"),
                    "-o", str(obj)], check=True)
    return obj


def pgbench(pg: PgServer, clients: int, seconds: int) -> float:
    out = subprocess.run(pg.client("pgbench", "-n", "-c", str(clients), "-j", "2", "-T", str(seconds), "postgres"),
                         check=True, capture_output=True, text=True, timeout=seconds * 10 + 120).stdout
    m = re.search(r"tps = ([\d.]+) \(without", out)
    if not m:
        raise RuntimeError(f"cannot read pgbench's result:\n{out}")
    return float(m.group(1))


def one_run(mode: str, pg: PgServer, args: argparse.Namespace, classes_obj: Path) -> dict[str, Any]:
    from kprobe.agent.probeset import ProbeConfig
    from kprobe.agent.recorder import RecorderConfig
    from kprobe.embedded import EmbeddedSession
    from kprobe.protocols.capture import PayloadCapture

    pg.psql("SELECT pg_stat_statements_reset()")
    out: dict[str, Any] = {"mode": mode}
    with tempfile.TemporaryDirectory(prefix="kprobe-bench-payload-") as tmp, ExitStack() as stack:
        stack.enter_context(bpf_stats())
        payload = None
        if mode != "off":
            # as `kprobe record --watch-pid` configures an embedded recorder (15 s flushes, small tables held)
            cfg = RecorderConfig(probes=ProbeConfig(filter_on=True, watch_pids=[pg.proc.pid]), flush_ms=15000.0,
                                 hold_ms=60000.0)
            session = EmbeddedSession(Path(tmp) / "data", cfg).start()
            stack.callback(session.stop)
            if mode.startswith("payload"):
                payload = PayloadCapture(session.recorder.probes, write=session.store.write,
                                         obj_path=classes_obj if mode == "payload-classes" else None).start()
                stack.callback(payload.stop)
            time.sleep(2)  # start-up work (first flushes, process scan) out of the window
        b0, c0, t0 = bpf_snapshot(), time.process_time(), time.monotonic()
        out["tps"] = pgbench(pg, args.clients, args.seconds)
        wall, cpu = time.monotonic() - t0, time.process_time() - c0
        b1 = bpf_snapshot()
        if mode != "off":
            out["agent_cpu_pct"] = 100.0 * cpu / wall
        progs: dict[str, list[int]] = {}
        for pid, (name, cnt, ns) in b1.items():
            if not name.startswith(("kp_payload", "kp_ssl")):
                continue
            _, cnt0, ns0 = b0.get(pid, (name, 0, 0))
            p = progs.setdefault(name, [0, 0])
            p[0] += cnt - cnt0
            p[1] += ns - ns0
        if payload is not None:
            payload.flush()
            out["bpf"] = {k: {"runs": r, "ns_per_run": ns / r if r else 0.0} for k, (r, ns) in progs.items() if r}
            emit = [v for k, v in progs.items() if k.startswith("kp_payload_exit")]
            out["exit_ns_per_run"] = sum(ns for _, ns in emit) / max(sum(r for r, _ in emit), 1)
            out["bpf_pct_core"] = 100.0 * sum(ns for _, ns in progs.values()) / (wall * 1e9)
            out["ring"] = payload.ring_stats()
            c = payload.counters()
            out["drops"] = c["payload_drops"]
            out["gaps"] = c["payload_gaps"]
            stats = payload.protocol_stats().get("postgresql", {})
            out["statements"] = stats.get("exchanges", 0)
            out["messages"] = stats.get("messages", 0)
            out["decoded_bytes"] = stats.get("bytes", 0)
        out["window_s"] = wall
    return out


def line(r: dict[str, Any]) -> str:
    s = f"{r['mode']:<16} tps {r['tps']:8.1f}"
    if "agent_cpu_pct" in r:
        s += f" | agent CPU {r['agent_cpu_pct']:5.1f} % of a core"
    if "ring" in r:
        ring = r["ring"]
        s += (f" | payload exit {r['exit_ns_per_run']:6.0f} ns/run, BPF {r['bpf_pct_core']:.2f} % core, "
              f"{ring['records']} records {ring['bytes'] / max(ring['records'], 1):.0f} B each, ring peak "
              f"{ring['peak_pending_bytes'] >> 10} KiB, drops {r['drops']}, statements {r['statements']}")
    return s


def summarise(runs: list[dict[str, Any]], modes: list[str]) -> dict[str, Any]:
    by_round: dict[int, dict[str, dict[str, Any]]] = {}
    for r in runs:
        by_round.setdefault(r["round"], {})[r["mode"]] = r
    out: dict[str, Any] = {}
    for mode in modes:
        rs = [r for r in runs if r["mode"] == mode]
        s: dict[str, Any] = {"tps_median": statistics.median(r["tps"] for r in rs)}
        if mode != "off" and "off" in modes:
            ratios = [rd[mode]["tps"] / rd["off"]["tps"] for rd in by_round.values() if mode in rd and "off" in rd]
            s.update(ratio_median=statistics.median(ratios), ratio_min=min(ratios), ratio_max=max(ratios))
        if mode != "off":
            s["agent_cpu_pct_median"] = statistics.median(r["agent_cpu_pct"] for r in rs)
        if mode.startswith("payload"):
            s["exit_ns_per_run_median"] = statistics.median(r["exit_ns_per_run"] for r in rs)
            s["bpf_pct_core_median"] = statistics.median(r["bpf_pct_core"] for r in rs)
            s["drops_total"] = sum(r["drops"] for r in rs)
            s["statements_total"] = sum(r["statements"] for r in rs)
            s["ring_peak_bytes_max"] = max(r["ring"]["peak_pending_bytes"] for r in rs)
            rate = [r["ring"]["bytes"] / r["window_s"] for r in rs]
            s["ring_bytes_per_s_max"] = max(rate)
            if "record" in modes:  # the capture's own CPU: this round's payload run minus its record run
                per = [(rd[mode]["agent_cpu_pct"] - rd["record"]["agent_cpu_pct"]) / 100 * rd[mode]["window_s"]
                       / max(rd[mode]["statements"], 1) * 1e6 for rd in by_round.values() if mode in rd and "record" in rd]
                per_mb = [(rd[mode]["agent_cpu_pct"] - rd["record"]["agent_cpu_pct"]) / 100 * rd[mode]["window_s"]
                          / max(rd[mode]["ring"]["bytes"] / 1e6, 1e-9) for rd in by_round.values()
                          if mode in rd and "record" in rd]
                s["capture_cpu_us_per_statement_median"] = statistics.median(per)
                s["capture_cpu_s_per_ring_mb_median"] = statistics.median(per_mb)
        out[mode] = s
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    why = unavailable()
    if why:
        print(f"payload bench: {why}", file=sys.stderr)
        return 2
    modes = args.modes.split(",")
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="kprobe-bench-payload-obj-") as objdir:
        classes_obj = build_classes_object(Path(objdir))
        pg = PgServer()
        try:
            subprocess.run(pg.client("pgbench", "-i", "-q", "-s", str(args.scale), "postgres"), check=True,
                           capture_output=True, timeout=1800)
            for rnd in range(args.rounds):
                order = modes[rnd % len(modes):] + modes[: rnd % len(modes)]
                for mode in order:
                    r = one_run(mode, pg, args, classes_obj)
                    r["round"] = rnd
                    runs.append(r)
                    log(f"round {rnd} " + line(r))
        finally:
            pg.stop()
    summary = summarise(runs, modes)
    if args.json:
        print(json.dumps({"runs": runs, "summary": summary}, indent=1))
    else:
        for mode, s in summary.items():
            print(f"{mode:<16} " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                              for k, v in s.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
