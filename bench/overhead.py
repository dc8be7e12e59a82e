"""Benchmark: what `kprobe record` costs the service it observes, measured in one run.

Why: the recorder's promise is "always on in production"; that only holds if
the observed service barely notices it. Goals to report against: <= 3 %
throughput loss and <= 5 % p99 latency increase on a request/response service,
zero drops. Pure measurement: nothing here asserts the goals.

Workloads (C, ``bench/workloads/``, compiled with ``cc -O2`` into ``bench/build/``):

* rr: ``rr_server`` + ``rr_client`` over loopback TCP, TCP_NODELAY, 64-byte
  request, 256-byte reply, closed loop (one outstanding request per
  connection), ``--conns`` connections (default 1: a latency-bound service like
  an order gateway, which leaves CPU headroom the way production does; use
  ``--conns 4`` for a CPU-saturated variant where every recorder cycle is
  stolen from the service). The client records every request's latency and
  prints req/s, p50, p99.
* pingpong: two processes bounce one byte through two pipes: the
  context-switch-bound worst case for the sched and syscall probes.

Modes, per round: ``off`` (no recorder), ``watch`` (``kprobe record
--watch-comm <workload comms>``) and ``system`` (``kprobe record`` with no
watch list). Each round runs all three once, in an order rotated by round, so
each recorder run has a baseline from the same round next to it (A/B/A/B...);
loss and p99 increase are computed per round against that round's ``off`` run
and the median over rounds is reported. The recorder runs from a fresh data
directory; the workload starts only after it printed "recording" on stderr and
it is stopped with SIGINT after; then ``kprobe stats --json`` gives what it
stored and lost.

CPU placement (2 vCPUs): ``rr_server`` is pinned to CPU 0 and ``rr_client`` to
CPU 1, so the two ends never migrate and run-to-run noise stays low;
``pingpong`` (both processes) is pinned to CPU 0, so every round trip is two
context switches on one CPU with no idle time between them. The recorder is
NOT pinned: like in production it takes whatever CPU the scheduler gives it,
so its cost shows up as interference, not as a reserved core.

The recorder's own CPU is utime+stime of its process (all threads) from
/proc/<pid>/stat over the workload window only (startup and final flush
excluded; 100 % = one CPU). The host is shared, so every run also records
the host's total CPU busy % (/proc/stat) and the number of BPF links attached
by someone else before it started: a baseline with foreign links, or a busy
host, is flagged in the output because it makes the comparison meaningless.
Before each run the bench waits (up to --quiet-wait s) for no foreign links
and host busy <= --quiet-busy %; the busy % it got is printed with the run.

``--floor`` adds a fourth mode, ``floor``: programs that return at once, attached
to exactly the hooks `kprobe record` attaches (generated from the probes'
``SEC(...)`` lines, loaded by ``bench/floor/attach_all.c``). Its loss is the
cost of the hooks themselves on this kernel and VM (dispatch, trampolines,
speculation mitigations): no program body can go below it, so the recorder's
loss is read against it.

CPU times (recorder, rr_server) are summed from ``/proc/<pid>/task/*/schedstat``
(exact run time): with tick-based accounting (CONFIG_TICK_CPU_ACCOUNTING)
utime+stime over-bills threads that wake on timers, as the recorder's do.

The recorder runs with `kprobe record`'s defaults (``--detail bounded``: see
``kprobe record --help``); ``--record-args "--detail full"`` measures another
capture policy with the same harness.

Usage: python3 bench/overhead.py [--rounds 3] [--seconds 5] [--conns 1] [--skip-pingpong]
       [--floor] [--record-args "--detail full"] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
SRC = BENCH / "workloads"
BUILD = BENCH / "build"
WORKLOADS = ("rr_server", "rr_client", "pingpong")
MODES = ("off", "watch", "system")
FLOOR = BENCH / "floor"
PROBES_DIR = BENCH.parent / "probes"
REQ_BYTES, REPLY_BYTES = 64, 256
CLK_TCK = os.sysconf("SC_CLK_TCK")
GOAL_LOSS_PCT, GOAL_P99_PCT = 3.0, 5.0


class BenchError(RuntimeError):
    """Something the bench needs did not run; the message says what."""


# -- build and host observation ---------------------------------------------------------------------

def build_workloads(names: tuple[str, ...] = WORKLOADS) -> None:
    """Compile each workload if its binary is missing or older than its source."""
    BUILD.mkdir(exist_ok=True)
    for name in names:
        src, out = SRC / f"{name}.c", BUILD / name
        if out.exists() and out.stat().st_mtime >= src.stat().st_mtime:
            continue
        cmd = ["cc", "-O2", "-Wall", "-pthread", "-o", str(out), str(src)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise BenchError(f"compiling {src} failed:\n{res.stderr}")


def build_floor() -> Path:
    """Empty programs on every hook the recorder attaches, plus the loader; returns the object.

    Generated from the probes' sources each time, so the floor follows the probe set.
    """
    from kprobe.schemas.tables import PROBES

    hooks = []
    for probe in PROBES:
        hooks += re.findall(r'SEC\("((?:tp_btf|raw_tp|tp|tracepoint|fentry|fexit|kprobe|kretprobe)/[^"]+)"\)',
                            (PROBES_DIR / f"{probe}.bpf.c").read_text())
    if not (PROBES_DIR / "vmlinux.h").exists():
        raise BenchError("probes/vmlinux.h is missing: run `make -C probes` first")
    src = ['#include "vmlinux.h"', "#include <bpf/bpf_helpers.h>", "#include <bpf/bpf_tracing.h>",
           'char LICENSE[] SEC("license") = "Dual BSD/GPL";']
    src += [f'SEC("{h}") int BPF_PROG(floor_{i}) {{ return 0; }}' for i, h in enumerate(hooks)]
    BUILD.mkdir(exist_ok=True)
    (BUILD / "floor.bpf.c").write_text("\n".join(src) + "\n")
    arch = {"x86_64": "x86", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    for cmd in (["clang", "-O2", "-g", "-target", "bpf", f"-D__TARGET_ARCH_{arch}", f"-I{PROBES_DIR}",
                 "-c", str(BUILD / "floor.bpf.c"), "-o", str(BUILD / "floor.bpf.o")],
                ["cc", "-O2", "-Wall", "-o", str(BUILD / "attach_all"), str(FLOOR / "attach_all.c"), "-lbpf"]):
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise BenchError(f"`{' '.join(cmd)}` failed:\n{res.stderr}")
    return BUILD / "floor.bpf.o"


def proc_cpu_s(pid: int) -> float:
    """CPU of a process (all its threads), seconds: exact run time from schedstat when the
    kernel has it, else utime+stime (tick-sampled)."""
    total, exact = 0, True
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except FileNotFoundError:  # the thread ended between listdir and open
                continue
    except OSError:
        exact = False
    if exact and total:
        return total / 1e9
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def host_cpu() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    idle = vals[3] + vals[4]
    return sum(vals) - idle, sum(vals)


def bpf_links() -> int:
    """BPF links attached on the host right now (bpftool); -1 when it cannot tell."""
    if shutil.which("bpftool") is None:
        return -1
    res = subprocess.run(["bpftool", "-j", "link", "show"], capture_output=True, text=True)
    if res.returncode != 0:
        return -1
    links = json.loads(res.stdout or "[]")
    return sum(1 for link in links if link.get("type") not in ("cgroup", "netns", "xdp", "tcx", "netkit"))


# -- the recorder -----------------------------------------------------------------------------------

@dataclass
class RecorderRun:
    """A `kprobe record` subprocess: started, awaited until recording, stopped with SIGINT."""

    args: list[str]
    data: Path
    proc: subprocess.Popen | None = None
    stderr: list[str] = field(default_factory=list)
    _recording: threading.Event = field(default_factory=threading.Event)
    _reader: threading.Thread | None = None

    def start(self, timeout: float = 90.0) -> RecorderRun:
        cmd = [sys.executable, "-m", "kprobe", "record", "--data", str(self.data), *self.args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while not self._recording.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise BenchError(f"`{' '.join(cmd)}` did not start recording:\n" + "".join(self.stderr))
        return self

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)
            if line.startswith("kprobe: recording"):
                self._recording.set()

    def cpu_s(self) -> float:
        assert self.proc is not None
        return proc_cpu_s(self.proc.pid)

    def stop(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise BenchError("kprobe record did not stop within 60 s of SIGINT:\n" + "".join(self.stderr)) from None
        if self._reader is not None:
            self._reader.join(5)
        return rc


@dataclass
class FloorRun:
    """attach_all holding empty programs on the recorder's hooks; same start/stop shape as RecorderRun."""

    obj: Path
    proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> FloorRun:
        self.proc = subprocess.Popen([str(BUILD / "attach_all"), str(self.obj)], stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        lines = []
        deadline = time.monotonic() + timeout
        for line in self.proc.stderr:  # ends when the loader exits
            lines.append(line)
            if line.startswith("attached "):
                return self
            if time.monotonic() > deadline:
                break
        self.stop()
        raise BenchError("attach_all did not attach:\n" + "".join(lines))

    def cpu_s(self) -> float:
        return 0.0

    def stop(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout)


def recorder_stats(data: Path) -> dict:
    """What the stopped recorder stored and lost, via the CLI (`kprobe stats --json`)."""
    cmd = [sys.executable, "-m", "kprobe", "stats", "--data", str(data), "--json"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        raise BenchError(f"`{' '.join(cmd)}` failed:\n{res.stderr}")
    d = json.loads(res.stdout)
    rec = d.get("recorder", {})
    stored = {k: v for k, v in d["stored"].items() if v}
    return {
        "stored_total": sum(stored.values()),
        "stored": stored,
        "lost_total": int(rec.get("lost_total", 0)),
        "kernel_drops": {k: v for k, v in rec.get("kernel_drops_total", {}).items() if v},
        "write_errors": rec.get("write_errors", {}),
        "counters": rec.get("counters", {}),
    }


# -- workloads --------------------------------------------------------------------------------------

@dataclass
class Server:
    """One rr_server for the whole bench, started before any recorder (like a running service)."""

    proc: subprocess.Popen
    port: int

    @classmethod
    def start(cls) -> Server:
        cmd = ["taskset", "-c", "0", str(BUILD / "rr_server"), "0", str(REQ_BYTES), str(REPLY_BYTES)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("port "):
            proc.kill()
            raise BenchError(f"rr_server did not report its port (got {line!r})")
        return cls(proc, int(line.split()[1]))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def run_json(cmd: list[str], timeout: float) -> dict:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise BenchError(f"`{' '.join(cmd)}` exited {res.returncode}:\n{res.stdout}{res.stderr}")
    return json.loads(res.stdout)


def rr_workload(port: int, conns: int, seconds: float) -> Callable[[], dict]:
    cmd = ["taskset", "-c", "1", str(BUILD / "rr_client"), str(port), str(conns), str(seconds),
           str(REQ_BYTES), str(REPLY_BYTES)]
    return lambda: run_json(cmd, seconds + 30)


def pingpong_workload(seconds: float) -> Callable[[], dict]:
    cmd = ["taskset", "-c", "0", str(BUILD / "pingpong"), str(seconds)]
    return lambda: run_json(cmd, seconds + 30)


# -- one run, one round -----------------------------------------------------------------------------

@dataclass
class Config:
    seconds: float
    watch_comms: list[str]
    quiet_wait_s: float
    quiet_busy_pct: float
    record_args: list[str] = field(default_factory=list)
    server_pid: int | None = None  # rr_server runs for the whole bench: its CPU is read from /proc
    modes: tuple[str, ...] = MODES
    floor_obj: Path | None = None  # set when the floor mode runs


def host_busy_pct(interval_s: float = 1.0) -> float:
    """Host CPU busy % (all CPUs) over a short interval."""
    b0, t0 = host_cpu()
    time.sleep(interval_s)
    b1, t1 = host_cpu()
    return 100.0 * (b1 - b0) / max(t1 - t0, 1)


def wait_quiet(max_wait_s: float, max_busy_pct: float) -> tuple[int, float]:
    """Wait (bounded) until no one else's BPF links are attached and the host is idle enough.

    The host is shared: another recorder or a CPU hog would make the baseline meaningless,
    so each run starts in the quietest moment within ``max_wait_s``; what it got is returned
    (foreign links, busy %) and printed with the run.
    """
    deadline = time.monotonic() + max_wait_s
    while True:
        links, busy = bpf_links(), host_busy_pct(0.5)
        if (links <= 0 and busy <= max_busy_pct) or time.monotonic() >= deadline:
            return links, busy
        time.sleep(0.5)


def one_run(mode: str, workload: Callable[[], dict], cfg: Config) -> dict:
    """Workload once under ``mode``; adds recorder CPU, stored events and drops for recorder modes."""
    foreign, idle_busy = wait_quiet(cfg.quiet_wait_s, cfg.quiet_busy_pct)
    rec: RecorderRun | FloorRun | None = None
    with tempfile.TemporaryDirectory(prefix="kprobe-bench-oh-") as tmp:
        if mode == "floor":
            assert cfg.floor_obj is not None
            rec = FloorRun(cfg.floor_obj).start()
        elif mode != "off":
            watch = ["--watch-comm", *cfg.watch_comms] if mode == "watch" else []
            rec = RecorderRun([*cfg.record_args, *watch], Path(tmp) / "data").start()
        busy0, total0 = host_cpu()
        work0 = _workload_cpu_s(cfg.server_pid)
        cpu0, t0 = (rec.cpu_s() if rec else 0.0), time.monotonic()
        out = workload()
        wall = time.monotonic() - t0
        cpu1 = rec.cpu_s() if rec else 0.0
        work1 = _workload_cpu_s(cfg.server_pid)
        busy1, total1 = host_cpu()
        ops = out.get("requests", out.get("round_trips", 0)) or 1
        out["workload_cpu_us_per_op"] = 1e6 * (work1 - work0) / ops
        out["recorder_cpu_us_per_op"] = 1e6 * (cpu1 - cpu0) / ops
        out.update(mode=mode, foreign_bpf_links=foreign, busy_before_pct=idle_busy,
                   noisy=foreign > 0 or idle_busy > cfg.quiet_busy_pct, host_busy_pct=100.0 * (busy1 - busy0) / max(total1 - total0, 1))
        if isinstance(rec, FloorRun):
            rec.stop()
        elif rec is not None:
            rc = rec.stop()
            if rc != 0:
                raise BenchError(f"kprobe record exited {rc}:\n" + "".join(rec.stderr))
            out["recorder_cpu_pct"] = 100.0 * (cpu1 - cpu0) / wall
            out["recorder"] = recorder_stats(Path(tmp) / "data")
            out["recorder_stderr_tail"] = rec.stderr[-1].strip() if rec.stderr else ""
    return out


def _workload_cpu_s(server_pid: int | None) -> float:
    """CPU of the workload processes: waited children (client, pingpong pair) plus the server.

    CPU per operation is far less sensitive to a busy shared host than throughput: it is
    what the observed service pays per request, whoever else competes for the CPUs.
    """
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime + (proc_cpu_s(server_pid) if server_pid else 0.0)


def run_rounds(name: str, workload: Callable[[], dict], rounds: int, cfg: Config, log: Callable[[str], None]) -> list[dict]:
    """Each round runs every mode once, order rotated by round so no mode always goes first."""
    runs = []
    modes = cfg.modes
    for r in range(rounds):
        order = modes[r % len(modes):] + modes[: r % len(modes)]
        for mode in order:
            res = one_run(mode, workload, cfg)
            res["round"] = r
            runs.append(res)
            log(f"{name} round {r} {mode:<6} " + _short(res))
    return runs


def _short(res: dict) -> str:
    if "rps" in res:
        s = f"{res['rps']:>10.0f} req/s p50 {res['p50_us']:6.1f} us p99 {res['p99_us']:6.1f} us"
    else:
        s = f"{res['rt_per_s']:>10.0f} rt/s"
    s += f" cpu/op {res['workload_cpu_us_per_op']:.2f} us (+rec {res['recorder_cpu_us_per_op']:.2f})"
    if "recorder" in res:
        s += f" | rec cpu {res['recorder_cpu_pct']:5.1f} % stored {res['recorder']['stored_total']} lost {res['recorder']['lost_total']}"
    return s + (f" | host busy {res['host_busy_pct']:.0f} % (before: {res['busy_before_pct']:.0f} %)"
                f" foreign links {res['foreign_bpf_links']}")


# -- summary ----------------------------------------------------------------------------------------

def pct_change(new: float, base: float) -> float:
    return 100.0 * (new - base) / base


def summarize(runs: list[dict], rate_key: str) -> dict:
    """Per mode: medians, and per-round loss / p99 increase vs that round's baseline (median over rounds)."""
    base = {r["round"]: r for r in runs if r["mode"] == "off"}
    out: dict[str, dict] = {}
    for mode in dict.fromkeys(r["mode"] for r in runs):
        mine = [r for r in runs if r["mode"] == mode]
        s: dict = {"runs": len(mine), "median_rate": statistics.median(r[rate_key] for r in mine),
                   "median_workload_cpu_us_per_op": statistics.median(r["workload_cpu_us_per_op"] for r in mine)}
        if "p99_us" in mine[0]:
            s["median_p50_us"] = statistics.median(r["p50_us"] for r in mine)
            s["median_p99_us"] = statistics.median(r["p99_us"] for r in mine)
        if mode != "off":
            s["loss_pct"] = statistics.median(-pct_change(r[rate_key], base[r["round"]][rate_key]) for r in mine)
            if "p99_us" in mine[0]:
                s["p99_increase_pct"] = statistics.median(pct_change(r["p99_us"], base[r["round"]]["p99_us"]) for r in mine)
                s["p50_increase_pct"] = statistics.median(pct_change(r["p50_us"], base[r["round"]]["p50_us"]) for r in mine)
            s["workload_cpu_increase_pct"] = statistics.median(
                pct_change(r["workload_cpu_us_per_op"], base[r["round"]]["workload_cpu_us_per_op"]) for r in mine)
            s["cpu_cost_pct"] = statistics.median(
                pct_change(r["workload_cpu_us_per_op"] + r["recorder_cpu_us_per_op"],
                           base[r["round"]]["workload_cpu_us_per_op"]) for r in mine)
        if "recorder" in mine[0]:
            s["recorder_cpu_pct"] = statistics.median(r["recorder_cpu_pct"] for r in mine)
            s["stored_median"] = statistics.median(r["recorder"]["stored_total"] for r in mine)
            s["lost_total"] = sum(r["recorder"]["lost_total"] for r in mine)
            s["stored_last_run"] = mine[-1]["recorder"]["stored"]
            s["kernel_counters_last_run"] = mine[-1]["recorder"]["counters"]
        s["noisy_runs"] = sum(1 for r in mine if r["noisy"])
        s["median_host_busy_pct"] = statistics.median(r["host_busy_pct"] for r in mine)
        out[mode] = s
    return out


def print_summary(title: str, summary: dict, unit: str, latency: bool) -> None:
    print(f"\n{title}")
    head = f"  {'mode':<7} {unit:>11} {'loss %':>7}"
    if latency:
        head += f" {'p50 us':>7} {'p99 us':>7} {'p99 +%':>7}"
    head += f" {'cpu/op us':>9} {'svc cpu+%':>9} {'+rec cpu%':>9} {'rec CPU%':>8} {'stored':>9} {'lost':>5} {'host busy%':>10} {'noisy':>5}"
    print(head)
    for mode, s in summary.items():
        line = f"  {mode:<7} {s['median_rate']:>11.0f} {_opt(s, 'loss_pct'):>7}"
        if latency:
            line += f" {s['median_p50_us']:>7.1f} {s['median_p99_us']:>7.1f} {_opt(s, 'p99_increase_pct'):>7}"
        line += (f" {s['median_workload_cpu_us_per_op']:>9.2f} {_opt(s, 'workload_cpu_increase_pct'):>9}"
                 f" {_opt(s, 'cpu_cost_pct'):>9} {_opt(s, 'recorder_cpu_pct', '.1f'):>8} {_opt(s, 'stored_median', '.0f'):>9} {s.get('lost_total', '-'):>5} "
                 f"{s['median_host_busy_pct']:>10.0f} {s['noisy_runs']:>5}")
        print(line)
    for mode, s in summary.items():
        if "stored_last_run" in s:
            print(f"  {mode} stored (last run): {s['stored_last_run']}")
            print(f"  {mode} kernel-aggregated counters (last run, not lost): {s['kernel_counters_last_run']}")
    print("  cpu/op = CPU of the workload processes per request/round trip; svc cpu+% = its increase over "
          "the same round's off run; +rec cpu% = the same including the recorder's CPU per op")
    if any(s["noisy_runs"] for s in summary.values()):
        print("  WARNING: column 'noisy' counts runs that started with someone else's BPF links attached or "
              "the host busy: their comparison is not clean (see the per-run lines on stderr)")


def _opt(s: dict, key: str, fmt: str = "+.1f") -> str:
    return format(s[key], fmt) if key in s else "-"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0, help="workload duration per run (default: %(default)s)")
    ap.add_argument("--conns", type=int, default=1, help="rr connections in parallel (default: %(default)s)")
    ap.add_argument("--quiet-wait", type=float, default=20.0,
                    help="before each run wait up to this many s for others' BPF links to go and the host "
                         "to be idle (default: %(default)s)")
    ap.add_argument("--quiet-busy", type=float, default=10.0,
                    help="host busy %% below which it counts as idle (default: %(default)s)")
    ap.add_argument("--skip-pingpong", action="store_true")
    ap.add_argument("--floor", action="store_true",
                    help="add the 'floor' mode: empty programs on the recorder's hooks (the hooks' own cost)")
    ap.add_argument("--record-args", default="", metavar="ARGS",
                    help="extra `kprobe record` options, one string, e.g. \"--detail full\" (default: none)")
    ap.add_argument("--json", action="store_true", help="print one JSON object (progress still on stderr)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("overhead: error: kprobe record needs root; run with sudo", file=sys.stderr)
        return 2
    try:
        return _run(args)
    except (BenchError, subprocess.TimeoutExpired, OSError) as e:
        print(f"overhead: error: {e}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    build_workloads()
    floor_obj = build_floor() if args.floor else None
    modes = (*MODES, "floor") if args.floor else MODES
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    result: dict = {"meta": {"cpus": os.cpu_count(), "seconds": args.seconds, "rounds": args.rounds,
                             "conns": args.conns, "record_args": args.record_args, "req_bytes": REQ_BYTES, "reply_bytes": REPLY_BYTES,
                             "kernel": os.uname().release,
                             "goals": {"loss_pct": GOAL_LOSS_PCT, "p99_increase_pct": GOAL_P99_PCT}}}
    server = Server.start()
    try:
        cfg = Config(args.seconds, ["rr_server", "rr_client"], args.quiet_wait, args.quiet_busy, args.record_args.split(),
                     server.proc.pid, modes, floor_obj)
        runs = run_rounds("rr", rr_workload(server.port, args.conns, args.seconds), args.rounds, cfg, log)
        result["rr"] = {"runs": runs, "summary": summarize(runs, "rps")}
    finally:
        server.stop()
    if not args.skip_pingpong:
        cfg = Config(args.seconds, ["pingpong"], args.quiet_wait, args.quiet_busy, args.record_args.split(),
                     modes=modes, floor_obj=floor_obj)
        runs = run_rounds("pingpong", pingpong_workload(args.seconds), args.rounds, cfg, log)
        result["pingpong"] = {"runs": runs, "summary": summarize(runs, "rt_per_s")}
    if args.json:
        json.dump(result, sys.stdout, indent=1)
        print()
        return 0
    print(f"host: {os.cpu_count()} CPUs, kernel {os.uname().release}, load average at end {os.getloadavg()[0]:.2f}")
    print(f"kprobe record {args.record_args or '(defaults)'} overhead: {args.rounds} rounds x {args.seconds:g} s per run, medians over rounds; "
          f"goals: loss <= {GOAL_LOSS_PCT:g} %, p99 +<= {GOAL_P99_PCT:g} %, lost = 0")
    print_summary(f"rr: loopback TCP {REQ_BYTES} B req / {REPLY_BYTES} B reply, {args.conns} conn(s), "
                  "server on CPU 0, client on CPU 1", result["rr"]["summary"], "req/s", True)
    if "pingpong" in result:
        print_summary("pingpong: pipe round trips, both processes on CPU 0", result["pingpong"]["summary"],
                      "rt/s", False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
