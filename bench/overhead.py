"""Benchmark: what `kprobe record` costs real third-party workloads on this host (issue 13).

Why: kprobe is only worth having if an SRE leaves it running on the database and settlement
hosts, so its cost has to be measured where it hurts. A loopback request/response loop
under-states it (few syscalls, context switches and disk writes per request); a database does
many of each. The workloads are therefore real programs the bench starts itself:

* pgbench (TPC-B-like, 4 clients) against a PostgreSQL with its DEFAULT durability: fsync and
  synchronous_commit stay on, because turning them off removes exactly the fsync waits, block
  I/O and wake-ups the recorder has to trace and would flatter it;
* redis-benchmark SET/GET against a redis-server (an in-memory service: syscalls and wake-ups);
* `perf bench sched pipe` pinned to one CPU: two context switches per round trip and nothing
  else, the scheduler hooks' worst case.

Throughput on a shared 2-vCPU VM swings 10-20 % run to run, so the ratios are paired and backed
by exact costs that do not depend on the noise:

* Pairing: each round runs every mode once, in an order rotated per round, and each attached
  run is divided by the SAME round's `off` run; the median ratio is reported with its min-max.
* Floor: two EMPTY programs on sched_switch and sched_waking, attached as tp_btf like the probes
  (bench/floor/attach_all.c). What merely hooking the scheduler costs on this kernel and VM is
  the limit no recorder design can beat, so the goals are stated relative to it. `floor-all`
  (not run by default) puts empties on every hook today's probes attach: what the current
  design's number of hooks costs before any program body runs. `floor-calls` (not run by default):
  the floor plus empties on the per-call syscall tracepoints the default recording attaches (fsync,
  openat, ...): enabling any syscall tracepoint sends EVERY syscall of every task through the
  kernel's slow entry/exit path, a cost no program's run time shows.
* BPF cost: kernel.bpf_stats_enabled during each run (restored after; a BPF_ENABLE_STATS fd is
  held as well so a concurrent restore elsewhere cannot switch it off mid-run), each program's
  run_cnt/run_time_ns from `bpftool prog show` just before and after the workload window: runs,
  ns per run, % of one core. Only programs whose fds the measured process holds
  (/proc/PID/fdinfo prog_id) are counted; time of anyone else's programs during the window is
  printed as foreign, a sign the run was disturbed. The stats' clock reads are inside what they
  measure (the floor's empty programs show how much: tens of ns per run in a VM) and add to every
  program run, so ratios with them on are slightly pessimistic; --no-bpf-stats runs without.
* Recorder CPU: exact run time of all its threads (/proc/PID/task/*/schedstat; tick-based
  utime/stime over-bills timer-driven threads) over the workload window only, so start-up and
  the final flush are excluded, as they are in production. RSS: VmRSS at the end of the window
  and VmHWM. `kprobe stats --json` after the stop gives rows stored per type and drops.
* Memory over time: --memory-minutes N keeps pgbench running N minutes under the recorder and
  samples its RSS every 10 s; chDB's caches and merges grow with time, so a 10 s run shows
  start-up memory, not what the goal is about. Each sample is split by kind
  (agent/mem_breakdown.py): the kernel's anon/file/shmem and, from smaps, the engine's code, other
  libraries, BPF rings, malloc heap, thread stacks and other anonymous memory; the summary prints
  the split at 1, 2 and 4 minutes. --memory-smaps DIR keeps every sample's /proc/PID/smaps.

p99: pgbench writes every transaction's latency (-l); p99 is the nearest-rank 99th percentile
over all transactions of the run. redis-benchmark prints p99 per test; the worse of SET and GET
is used. perf bench has none.

The host is shared: before each run the bench waits (bounded by --quiet-wait) for no foreign
BPF links and host busy <= --quiet-busy %, and prints what it got; a workload's round in which a
run was disturbed anyway (someone else's BPF attached or running during it) is run again, up to
--retries times, because one disturbed `off` run skews every ratio of its round. Servers listen on 127.0.0.1
(free ports) with their files in temp dirs, start once before the first round (a service is
running when a recorder is attached to its host) and are torn down at the end, also on Ctrl-C.
Nothing here asserts: it prints numbers and a verdict per goal of issue 13.

Usage: python bench/overhead.py [--rounds 5] [--seconds 10] [--workloads pgbench,redis,pipe]
       [--modes off,floor,record,record-watch-none] [--record-args "..."] [--memory-minutes 4]
       [--memory-smaps DIR] [--json]
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import json
import os
import platform
import pwd
import random
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kprobe.agent import mem_breakdown
from kprobe.agent.recorder import RecorderConfig

BENCH = Path(__file__).resolve().parent
BUILD = BENCH / "build"
FLOOR_LOADER = BENCH / "floor" / "attach_all.c"
PROBES_DIR = BENCH.parent / "probes"
ALL_WORKLOADS = ("pgbench", "redis", "pipe")
ALL_MODES = ("off", "floor", "floor-all", "floor-calls", "record", "record-watch-none")
DEFAULT_MODES = ("off", "floor", "record", "record-watch-none")
WATCH_NONE = "kp-bench-none"  # a process name nothing on the host has
FLOOR_HOOKS = ("tp_btf/sched_switch", "tp_btf/sched_waking")
SYSCTL_BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
BPF_SYSCALL_NR = {"x86_64": 321, "aarch64": 280}
BPF_ENABLE_STATS, BPF_STATS_RUN_TIME = 32, 0

# issue 13's goals: throughput ratio >= floor's ratio minus this, per workload; and absolute costs
RATIO_SLACK = {"pgbench": 0.03, "redis": 0.03, "pipe": 0.05}
GOAL_CPU_PCT, GOAL_BPF_PCT, GOAL_RSS_MB = 1.5, 1.5, 256.0
SETTLE_S = RecorderConfig.trim_first_s + 3.0   # past the recorder's start-up (see --settle)


class BenchError(RuntimeError):
    """Something the bench needs did not run; the message says what."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(cmd: list[str], timeout: float = 120.0, **kw: Any) -> str:
    """Run a command, return its stdout; a failure raises BenchError with its output."""
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if res.returncode != 0:
        raise BenchError(f"`{shlex.join(cmd)}` exited {res.returncode}:\n{res.stdout}{res.stderr}")
    return res.stdout


# -- tools ------------------------------------------------------------------------------------------

def pg_bindir() -> Path | None:
    """Debian's PostgreSQL server binaries (initdb, postgres, pgbench), newest major version."""
    dirs = [Path(d) for d in glob.glob("/usr/lib/postgresql/*/bin")
            if all(Path(d, b).exists() for b in ("initdb", "postgres", "pgbench", "psql", "pg_isready"))]
    return max(dirs, key=lambda d: int(d.parent.name)) if dirs else None


def perf_works() -> bool:
    if shutil.which("perf") is None:
        return False
    return subprocess.run(["perf", "bench", "sched", "pipe", "-l", "10"], capture_output=True).returncode == 0


def ensure_tools(workloads: tuple[str, ...], modes: tuple[str, ...]) -> None:
    """Install with apt what the chosen workloads and modes need and is missing (idempotent)."""
    need: list[str] = []
    if shutil.which("bpftool") is None:
        need.append("bpftool")
    if any(m.startswith("floor") for m in modes):
        need += [p for p, ok in (("clang", shutil.which("clang")), ("libbpf-dev", Path("/usr/include/bpf/libbpf.h").exists())) if not ok]
    if "pgbench" in workloads and pg_bindir() is None:
        need += ["postgresql", "postgresql-contrib"]
    if "redis" in workloads:
        need += [p for p, b in (("redis-server", "redis-server"), ("redis-tools", "redis-benchmark")) if shutil.which(b) is None]
    if "pipe" in workloads and not perf_works():
        need.append("linux-perf")
    if not need:
        return
    log(f"overhead: installing {' '.join(need)} with apt")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-qq"], timeout=600, env=env)
    run(["apt-get", "install", "-y", "-qq", *need], timeout=1800, env=env)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise BenchError(f"{what} did not come up within {timeout:g} s")
        time.sleep(0.2)


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGINT, timeout: float = 60.0) -> int:
    """Signal a child, wait, kill it if it does not end; returns its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    return s[max(0, min(len(s) - 1, -(-len(s) * q // 100) - 1))] if s else float("nan")


# -- workloads --------------------------------------------------------------------------------------

class Workload(Protocol):
    name: str
    unit: str
    title: str

    def start(self, seconds: float) -> None: ...  # servers up, data loaded, sized for ~seconds per run
    def prepare(self) -> None: ...  # untimed, before each run (before the quiet wait)
    def run(self) -> dict[str, Any]: ...  # one measured run: rate, p99_ms (when the tool has it)
    def stop(self) -> None: ...


@dataclass
class Pgbench:
    """PostgreSQL from Debian's binaries in a temp dir (default config, TCP on 127.0.0.1) + pgbench."""

    scale: int = 10
    clients: int = 4
    threads: int = 2
    name: str = "pgbench"
    unit: str = "tps"
    title: str = ""
    seconds: int = 10
    bindir: Path = field(default_factory=lambda: Path("/nonexistent"))
    tmp: Path | None = None
    port: int = 0
    proc: subprocess.Popen | None = None

    def _client(self, tool: str, *args: str) -> list[str]:
        return [str(self.bindir / tool), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", *args]

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(f"postgres exited {self.proc.returncode}:\n{(self.tmp / 'server.log').read_text()}")  # type: ignore[operator]
        return subprocess.run(self._client("pg_isready", "-q"), capture_output=True).returncode == 0

    def start(self, seconds: float) -> None:
        found = pg_bindir()
        if found is None:
            raise BenchError("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin")
        self.bindir, self.seconds = found, max(1, round(seconds))
        # on the root file system (not tmpfs): fsync and block I/O must be real
        self.tmp = Path(tempfile.mkdtemp(prefix="kprobe-bench-pg-", dir="/var/tmp"))
        pg = pwd.getpwnam("postgres")
        os.chown(self.tmp, pg.pw_uid, pg.pw_gid)
        data = self.tmp / "data"
        run([str(self.bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8"],
            timeout=300, user="postgres", group="postgres", extra_groups=[], cwd=self.tmp)
        self.port = free_port()
        with open(self.tmp / "server.log", "w") as logf:
            self.proc = subprocess.Popen(
                [str(self.bindir / "postgres"), "-D", str(data), "-c", "listen_addresses=127.0.0.1",
                 "-c", f"port={self.port}", "-c", f"unix_socket_directories={self.tmp}"],
                user="postgres", group="postgres", extra_groups=[], cwd=self.tmp, stdout=logf,
                stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self._ready, "postgres")
        show = run(self._client("psql", "-Atc", "SELECT version(), current_setting('fsync'), "
                                "current_setting('synchronous_commit'), current_setting('shared_buffers')", "postgres"))
        version, fsync, sync_commit, shared_buffers = show.strip().split("|")
        log(f"pgbench: initialising scale {self.scale} ({version.split(' on ')[0]})")
        run(self._client("pgbench", "-i", "-q", "-s", str(self.scale), "postgres"), timeout=1800)
        fs = run(["findmnt", "-n", "-o", "FSTYPE", "-T", str(self.tmp)]).strip()
        self.title = (f"pgbench: TPC-B-like, scale {self.scale}, {self.clients} clients, {self.threads} threads, "
                      f"TCP 127.0.0.1; {version.split(' on ')[0]}, fsync={fsync}, synchronous_commit={sync_commit}, "
                      f"shared_buffers={shared_buffers}, data on {fs}; p99 from the per-transaction log (-l)")
        self.prepare()
        self.run_for(min(self.seconds, 5))  # warm-up: caches, and the first measured run is not a cold start

    def prepare(self) -> None:
        """What pgbench's own pre-run vacuum does, plus a checkpoint: every run starts from the same state."""
        run(self._client("psql", "-q", "-c", "VACUUM pgbench_branches", "-c", "VACUUM pgbench_tellers",
                         "-c", "TRUNCATE pgbench_history", "-c", "CHECKPOINT", "postgres"), timeout=300)

    def run(self) -> dict[str, Any]:
        return self.run_for(self.seconds)

    def run_for(self, seconds: int) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="kprobe-bench-pgl-") as logs:
            out = run(self._client("pgbench", "-n", "-c", str(self.clients), "-j", str(self.threads),
                                   "-T", str(seconds), "-l", "--log-prefix", f"{logs}/tx", "postgres"),
                      timeout=seconds + 120)
            lat_us = [float(parts[2]) for f in Path(logs).iterdir() for line in f.read_text().splitlines()
                      if len(parts := line.split()) >= 3 and parts[2].isdigit()]
        m = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
        if not m or not lat_us:
            raise BenchError(f"cannot read pgbench's result:\n{out}")
        return {"rate": float(m.group(1)), "p99_ms": percentile(lat_us, 99) / 1e3,
                "p50_ms": percentile(lat_us, 50) / 1e3, "transactions": len(lat_us)}

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, signal.SIGINT, 60)  # fast shutdown
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)


@dataclass
class Redis:
    """redis-server (no persistence, 127.0.0.1, free port) + redis-benchmark SET/GET, defaults otherwise."""

    name: str = "redis"
    unit: str = "req/s"
    title: str = ""
    requests: int = 100_000
    tmp: Path | None = None
    port: int = 0
    proc: subprocess.Popen | None = None

    def start(self, seconds: float) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="kprobe-bench-redis-"))
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.tmp), "--logfile", str(self.tmp / "server.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for(lambda: subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True,
                                        text=True).stdout.strip() == "PONG", "redis-server")
        self.requests = 50_000
        warm = self.run()  # warm-up and sizing: each run takes about `seconds`
        self.requests = max(10_000, int(warm["rate"] * seconds / 2))
        version = run(["redis-server", "--version"]).split()[2]
        self.title = (f"redis-benchmark SET/GET: {self.requests} requests per test, 50 clients (its default), "
                      f"redis-server {version} on 127.0.0.1 without persistence; rate over both tests, "
                      "p99 the worse of SET's and GET's (as printed by redis-benchmark)")

    def prepare(self) -> None:
        pass

    def run(self) -> dict[str, Any]:
        out = run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(self.port), "-t", "set,get",
                   "-n", str(self.requests), "--csv"], timeout=600)
        rows = {r[0].strip('"'): [float(x.strip('"')) for x in r[1:]] for line in out.splitlines()
                if (r := line.split(","))[0].strip('"') in ("SET", "GET")}
        if set(rows) != {"SET", "GET"}:
            raise BenchError(f"cannot read redis-benchmark's result:\n{out}")
        # columns: rps, avg, min, p50, p95, p99, max (ms)
        rate = 2 / sum(1 / r[0] for r in rows.values())  # all requests / all time
        return {"rate": rate, "p99_ms": max(r[5] for r in rows.values()),
                **{f"{t.lower()}_rps": r[0] for t, r in rows.items()},
                **{f"{t.lower()}_p99_ms": r[5] for t, r in rows.items()}}

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, signal.SIGTERM, 30)
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)


@dataclass
class Pipe:
    """`perf bench sched pipe`, both processes pinned to CPU 0: only context switches."""

    name: str = "pipe"
    unit: str = "ops/s"
    title: str = ""
    loops: int = 100_000

    def start(self, seconds: float) -> None:
        warm = self.run()
        self.loops = max(50_000, int(warm["rate"] * seconds))
        self.title = f"perf bench sched pipe -l {self.loops}, pinned to CPU 0 (taskset -c 0): ping-pong, worst case"

    def prepare(self) -> None:
        pass

    def run(self) -> dict[str, Any]:
        out = run(["taskset", "-c", "0", "perf", "bench", "sched", "pipe", "-l", str(self.loops)], timeout=600)
        m = re.search(r"(\d+)\s+ops/sec", out)
        if not m:
            raise BenchError(f"cannot read perf bench's result:\n{out}")
        return {"rate": float(m.group(1))}

    def stop(self) -> None:
        pass


# -- host observation -------------------------------------------------------------------------------

def proc_cpu_s(pid: int) -> float:
    """Exact run time of all threads of a process, seconds (schedstat)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):  # the thread ended between listdir and open
            continue
    return total / 1e9


def proc_mem_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process, MB."""
    st = mem_breakdown.status(pid)
    return {k: st.get(k, 0) / 1024 for k in ("VmRSS", "VmHWM")}


def owned_prog_ids(pid: int) -> set[int]:
    """BPF programs a process holds (program and link fds), from /proc/PID/fdinfo."""
    ids = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        ids.update(int(m) for m in re.findall(r"^prog_id:\s*(\d+)", text, re.M))
    return ids


def host_cpu() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    idle = vals[3] + vals[4]
    return sum(vals) - idle, sum(vals)


def host_busy_pct(interval_s: float) -> float:
    b0, t0 = host_cpu()
    time.sleep(interval_s)
    b1, t1 = host_cpu()
    return 100.0 * (b1 - b0) / max(t1 - t0, 1)


def foreign_links(ours: set[int] | None = None) -> int:
    """BPF tracing links attached by someone else right now (bpftool)."""
    links = json.loads(run(["bpftool", "-j", "link", "show"]) or "[]")
    return sum(1 for link in links if link.get("type") not in ("cgroup", "netns", "xdp", "tcx", "netkit")
               and link.get("prog_id") not in (ours or set()))


def wait_quiet(max_wait_s: float, max_busy_pct: float) -> tuple[int, float]:
    """Wait (bounded) until no foreign BPF links are attached and the host is idle; returns what it got."""
    deadline = time.monotonic() + max_wait_s
    while True:
        links, busy = foreign_links(), host_busy_pct(0.5)
        if (links == 0 and busy <= max_busy_pct) or time.monotonic() >= deadline:
            return links, busy


def bpf_snapshot() -> dict[int, tuple[str, int, int]]:
    """Every loaded program: id -> (name, run_cnt, run_time_ns)."""
    return {p["id"]: (p.get("name", "?"), p.get("run_cnt", 0), p.get("run_time_ns", 0))
            for p in json.loads(run(["bpftool", "-j", "prog", "show"]) or "[]")}


@contextmanager
def bpf_stats() -> Iterator[None]:
    """Program run statistics for the block through a BPF_ENABLE_STATS fd: the kernel counts such
    fds and drops them with the process (even on SIGKILL), so benches that overlap cannot switch
    each other's counting off or leave it on. The sysctl is written only where that call is missing."""
    fd = enable_stats_fd()
    old = None
    if fd < 0:
        old = SYSCTL_BPF_STATS.read_text().strip()
        SYSCTL_BPF_STATS.write_text("1")
    try:
        yield
    finally:
        if fd >= 0:
            os.close(fd)
        if old is not None:
            SYSCTL_BPF_STATS.write_text(old)


def enable_stats_fd() -> int:
    """An fd holding kernel.bpf_stats on (BPF_ENABLE_STATS, 5.8+), or -1."""
    nr = BPF_SYSCALL_NR.get(platform.machine())
    if nr is None:
        return -1
    attr = (ctypes.c_uint32 * 2)(BPF_STATS_RUN_TIME, 0)
    return int(ctypes.CDLL(None, use_errno=True).syscall(nr, BPF_ENABLE_STATS, ctypes.byref(attr), ctypes.sizeof(attr)))


# -- what gets attached -----------------------------------------------------------------------------

class Attached(Protocol):
    proc: subprocess.Popen | None

    def start(self) -> Attached: ...
    def stop(self) -> int: ...


@dataclass
class RecorderRun:
    """A `kprobe record` subprocess: started, awaited until it prints "recording", stopped with SIGINT."""

    args: list[str]
    data: Path
    proc: subprocess.Popen | None = None
    stderr: list[str] = field(default_factory=list)
    recording_at: float = 0.0
    stopped_at: float = 0.0
    _recording: threading.Event = field(default_factory=threading.Event)
    _reader: threading.Thread | None = None

    def start(self, timeout: float = 120.0) -> RecorderRun:
        cmd = [sys.executable, "-m", "kprobe", "record", "--data", str(self.data), *self.args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while not self._recording.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise BenchError(f"`{shlex.join(cmd)}` did not start recording:\n" + "".join(self.stderr))
        self.recording_at = time.monotonic()
        return self

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)
            if line.startswith("kprobe: recording"):
                self._recording.set()

    def stop(self) -> int:
        assert self.proc is not None
        self.stopped_at = time.monotonic()
        rc = stop_process(self.proc, signal.SIGINT, 120)
        if self._reader is not None:
            self._reader.join(5)
        return rc

    def stats(self) -> dict[str, Any]:
        """What the stopped recorder stored and lost (`kprobe stats --json`), rows/s over its recording time."""
        d = json.loads(run([sys.executable, "-m", "kprobe", "stats", "--data", str(self.data), "--json"]))
        rec = d.get("recorder", {})
        stored = {k: int(v) for k, v in d.get("stored", {}).items() if v}
        secs = max(self.stopped_at - self.recording_at, 1e-3)
        drops = rec.get("kernel_drops_total", {})
        return {"stored": stored, "stored_total": sum(stored.values()), "recording_s": secs,
                "rows_per_s": sum(stored.values()) / secs,
                "lost_total": int(rec.get("lost_total", sum(drops.values()))),
                "kernel_drops": {k: v for k, v in drops.items() if v}, "write_errors": rec.get("write_errors", {})}


@dataclass
class FloorRun:
    """attach_all holding the programs of one object until SIGINT."""

    obj: Path
    proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> FloorRun:
        self.proc = subprocess.Popen([str(BUILD / "attach_all"), str(self.obj)], stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        assert self.proc.stderr is not None
        lines = []
        deadline = time.monotonic() + timeout
        for line in self.proc.stderr:  # ends when the loader exits
            lines.append(line)
            if line.startswith("attached "):
                n, total = map(int, re.findall(r"\d+", line)[:2])
                if n == total:
                    return self
                break
            if time.monotonic() > deadline:
                break
        self.stop()
        raise BenchError(f"attach_all {self.obj.name} did not attach everything:\n" + "".join(lines))

    def stop(self) -> int:
        assert self.proc is not None
        return stop_process(self.proc, signal.SIGINT, 30)


def build_floor(mode: str) -> Path:
    """An object of empty tp_btf programs and the loader; `floor`: sched_switch + sched_waking,
    `floor-all`: every tp_btf hook today's probes attach (read from their SEC lines each time),
    `floor-calls`: `floor` and the per-call syscall tracepoints of the bounded policy (KP_CALL_TP lines)."""
    if mode == "floor":
        hooks = list(FLOOR_HOOKS)
    elif mode == "floor-calls":
        calls = re.findall(r"^KP_CALL_TP\d\((\w+),", (PROBES_DIR / "syscalls.bpf.c").read_text(), re.M)
        hooks = [*FLOOR_HOOKS, *(f"tracepoint/syscalls/sys_{d}_{c}" for c in calls for d in ("enter", "exit"))]
    else:
        from kprobe.schemas.tables import PROBES

        hooks = [h for probe in PROBES
                 for h in re.findall(r'SEC\("(tp_btf/[^"]+)"\)', (PROBES_DIR / f"{probe}.bpf.c").read_text())]
    src = ['#define SEC(name) __attribute__((section(name), used))', 'char LICENSE[] SEC("license") = "GPL";']
    tps = [h.rsplit("/", 1)[1] for h in hooks]
    names = [f"floor_{tp}" if tps.count(tp) == 1 else f"floor_{tp}_{i}" for i, tp in enumerate(tps)]
    src += [f'SEC("{h}") int {n}(void *ctx) {{ return 0; }}' for h, n in zip(hooks, names, strict=True)]
    BUILD.mkdir(exist_ok=True)
    c, obj = BUILD / f"{mode}.bpf.c", BUILD / f"{mode}.bpf.o"
    c.write_text("\n".join(src) + "\n")
    run(["clang", "-O2", "-g", "-target", "bpf", "-c", str(c), "-o", str(obj)])
    loader = BUILD / "attach_all"
    if not loader.exists() or loader.stat().st_mtime < FLOOR_LOADER.stat().st_mtime:
        run(["cc", "-O2", "-Wall", "-o", str(loader), str(FLOOR_LOADER), "-lbpf"])
    return obj


# -- one run, the rounds ----------------------------------------------------------------------------

@dataclass
class Config:
    seconds: float
    modes: tuple[str, ...]
    record_args: list[str]
    quiet_wait_s: float
    quiet_busy_pct: float
    settle_s: float
    bpf_stats: bool
    floor_objs: dict[str, Path]
    retries: int


def attacher(mode: str, cfg: Config, tmp: Path) -> Attached | None:
    if mode == "off":
        return None
    if mode.startswith("floor"):
        return FloorRun(cfg.floor_objs[mode])
    watch = ["--watch-comm", WATCH_NONE] if mode == "record-watch-none" else []
    return RecorderRun([*cfg.record_args, *watch], tmp / "data")


def one_run(mode: str, wl: Workload, cfg: Config) -> dict[str, Any]:
    """The workload once under ``mode``, with the exact costs of what was attached over its window."""
    wl.prepare()
    foreign_before, busy_before = wait_quiet(cfg.quiet_wait_s, cfg.quiet_busy_pct)
    out: dict[str, Any] = {"mode": mode, "foreign_links_before": foreign_before, "busy_before_pct": busy_before}
    with tempfile.TemporaryDirectory(prefix="kprobe-bench-oh-") as tmp, ExitStack() as stack:
        if cfg.bpf_stats:  # also when off: then it shows whether anyone else's programs ran
            stack.enter_context(bpf_stats())
        att = attacher(mode, cfg, Path(tmp))
        if att is not None:
            att.start()
            stack.callback(att.stop)
            time.sleep(cfg.settle_s)
        pid = att.proc.pid if att is not None and att.proc is not None else 0
        ours = owned_prog_ids(pid) if pid else set()
        bpf0 = bpf_snapshot() if cfg.bpf_stats else {}
        cpu0 = proc_cpu_s(pid) if pid else 0.0
        h0, t0 = host_cpu(), time.monotonic()
        out.update(wl.run())
        wall = time.monotonic() - t0
        h1 = host_cpu()
        cpu1 = proc_cpu_s(pid) if pid else 0.0
        bpf1 = bpf_snapshot() if cfg.bpf_stats else {}
        out.update(window_s=wall, host_busy_pct=100.0 * (h1[0] - h0[0]) / max(h1[1] - h0[1], 1),
                   foreign_links_after=foreign_links(ours))
        if cfg.bpf_stats:
            out.update(bpf_cost(bpf0, bpf1, ours, wall))
        if att is not None:
            out["programs"] = len(ours)
        else:
            del out["bpf"], out["bpf_pct"]
        if isinstance(att, RecorderRun):
            out["recorder_cpu_pct"] = 100.0 * (cpu1 - cpu0) / wall
            out.update({"rss_mb": (mem := proc_mem_mb(pid))["VmRSS"], "hwm_mb": mem["VmHWM"]})
            stack.close()  # stop it (SIGINT: final flush) before reading its store
            if att.proc is not None and att.proc.returncode != 0:
                raise BenchError(f"kprobe record exited {att.proc.returncode}:\n" + "".join(att.stderr))
            out["recorder"] = att.stats()
    reasons = [f"{out['foreign_links_before']} foreign BPF links before" if out["foreign_links_before"] else "",
               f"{out['foreign_links_after']} foreign BPF links after" if out["foreign_links_after"] else "",
               f"host {busy_before:.0f} % busy before" if busy_before > cfg.quiet_busy_pct else "",
               f"foreign BPF {out['foreign_bpf_pct']:.2f} % of a core" if out.get("foreign_bpf_pct", 0) > 0.1 else ""]
    out["noisy"] = ", ".join(x for x in reasons if x)  # "" when clean
    return out


def bpf_cost(before: dict[int, tuple[str, int, int]], after: dict[int, tuple[str, int, int]],
             ours: set[int], wall: float) -> dict[str, Any]:
    """Per own program: runs, ns per run, % of one core over the window; plus the total and anyone else's."""
    progs: dict[str, dict[str, float]] = {}
    foreign_ns = 0
    for prog_id, (name, cnt, ns) in after.items():
        _, cnt0, ns0 = before.get(prog_id, (name, 0, 0))
        if prog_id not in ours:
            foreign_ns += max(ns - ns0, 0)
            continue
        runs, dns = cnt - cnt0, ns - ns0
        p = progs.setdefault(name, {"runs": 0, "ns": 0})  # same name twice (e.g. two exit hooks): summed
        p["runs"] += runs
        p["ns"] += dns
    for p in progs.values():
        p["ns_per_run"] = p["ns"] / p["runs"] if p["runs"] else 0.0
        p["pct_core"] = 100.0 * p["ns"] / (wall * 1e9)
    return {"bpf": progs, "bpf_pct": sum(p["pct_core"] for p in progs.values()),
            "foreign_bpf_pct": 100.0 * foreign_ns / (wall * 1e9)}


def run_rounds(workloads: list[Workload], rounds: int, cfg: Config) -> dict[str, list[dict[str, Any]]]:
    """Each round: every workload under every mode once, the modes' order rotated by round.

    A workload's round in which any run was disturbed (someone else's BPF attached or running, a busy
    host) is run again, up to ``cfg.retries`` times; the last attempt counts, flagged when still noisy.
    """
    runs: dict[str, list[dict[str, Any]]] = {wl.name: [] for wl in workloads}
    for r in range(rounds):
        order = cfg.modes[r % len(cfg.modes):] + cfg.modes[: r % len(cfg.modes)]
        for wl in workloads:
            for attempt in range(cfg.retries + 1):
                done = []
                for mode in order:
                    res = one_run(mode, wl, cfg)
                    res.update(round=r, attempt=attempt)
                    done.append(res)
                    log(f"round {r} {wl.name:<7} " + short(res, wl.unit))
                if not any(res["noisy"] for res in done) or attempt == cfg.retries:
                    break
                runs[wl.name] += [{**res, "discarded": True} for res in done]  # kept for --json, not summarised
                why = "; ".join(f"{res['mode']}: {res['noisy']}" for res in done if res["noisy"])
                log(f"round {r} {wl.name}: disturbed ({why}), running it again")
            base = next(res for res in done if res["mode"] == "off")
            for res in done:
                if res["mode"] != "off":
                    res["ratio"] = res["rate"] / base["rate"]
                    if "p99_ms" in res:
                        res["p99_change_pct"] = 100.0 * (res["p99_ms"] / base["p99_ms"] - 1)
            runs[wl.name] += done
    return runs


def short(res: dict[str, Any], unit: str) -> str:
    s = f"{res['mode']:<17} {res['rate']:>10.0f} {unit}"
    if "p99_ms" in res:
        s += f" p99 {res['p99_ms']:7.2f} ms"
    if "bpf_pct" in res:
        s += f" | BPF {res['bpf_pct']:5.2f} % core ({res['programs']} progs)"
    if "recorder_cpu_pct" in res:
        rec = res["recorder"]
        s += (f" rec CPU {res['recorder_cpu_pct']:5.2f} % RSS {res['rss_mb']:.0f} MB rows/s {rec['rows_per_s']:.0f}"
              f" lost {rec['lost_total']}")
    s += f" | busy before {res['busy_before_pct']:.0f} % during {res['host_busy_pct']:.0f} %"
    if res.get("foreign_bpf_pct", 0) > 0.01 or res["foreign_links_before"] or res["foreign_links_after"]:
        s += (f" foreign links {res['foreign_links_before']}/{res['foreign_links_after']}"
              f" BPF {res.get('foreign_bpf_pct', 0):.2f} %")
    return s


# -- memory over time -------------------------------------------------------------------------------

def breakdown_line(bd: dict[str, float]) -> str:
    """One line of a resident-set breakdown (agent/mem_breakdown.py), MB."""
    return (f"RSS {bd['rss_mb']:.0f} MB = anon {bd['anon_mb']:.0f} + file {bd['file_mb']:.0f} + shmem "
            f"{bd['shmem_mb']:.0f} | chDB code {bd['chdb_code_mb']:.0f}, other code {bd['other_code_mb']:.0f}, "
            f"data files {bd['data_files_mb']:.0f}, "
            f"rings {bd['rings_mb']:.0f}, heap {bd['heap_mb']:.0f}, stacks {bd['stacks_mb']:.0f}, "
            f"other anon {bd['anon_other_mb']:.0f}; {bd['threads']} threads")


def memory_run(pg: Pgbench, minutes: float, cfg: Config, smaps_dir: Path | None = None) -> dict[str, Any]:
    """pgbench for ``minutes`` under `kprobe record`, the recorder's RSS sampled every 10 s with its
    breakdown by kind (anon/file/shmem from the kernel; engine code, rings, heap, stacks from smaps);
    ``smaps_dir`` keeps each sample's /proc/PID/smaps for a closer look."""
    pg.prepare()
    if smaps_dir is not None:
        smaps_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kprobe-bench-mem-") as tmp:
        rec = RecorderRun(cfg.record_args, Path(tmp) / "data").start()
        try:
            pid = rec.proc.pid  # type: ignore[union-attr]
            secs = max(1, round(minutes * 60))
            client = subprocess.Popen(pg._client("pgbench", "-n", "-c", str(pg.clients), "-j", str(pg.threads),
                                                 "-T", str(secs), "postgres"), stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
            t0, cpu0, samples, kinds = time.monotonic(), proc_cpu_s(pid), [], []
            steady_from: tuple[float, float] | None = None    # (time, recorder CPU s) once past the first minute
            try:
                while client.poll() is None:
                    if steady_from is None and time.monotonic() - t0 >= 60:
                        steady_from = (time.monotonic(), proc_cpu_s(pid))
                    at, bd = round(time.monotonic() - t0), mem_breakdown.breakdown(pid).mb()
                    samples.append((at, bd["rss_mb"]))
                    kinds.append({"t_s": at, **bd})
                    log(f"memory: {at:>4} s recorder {breakdown_line(bd)}")
                    if smaps_dir is not None:
                        (smaps_dir / f"smaps-{at:04d}s.txt").write_text(Path(f"/proc/{pid}/smaps").read_text())
                    if client.poll() is None:
                        try:
                            client.wait(10)
                        except subprocess.TimeoutExpired:
                            pass
                out = client.communicate()[0]
            finally:
                stop_process(client, signal.SIGINT, 30)
            mem, cpu_now, t_now = proc_mem_mb(pid), proc_cpu_s(pid), time.monotonic()
            cpu_pct = 100.0 * (cpu_now - cpu0) / (t_now - t0)
            # every flush, complete flush, trim and retention pass of the minutes after start-up are in it
            steady_cpu = 100.0 * (cpu_now - steady_from[1]) / (t_now - steady_from[0]) if steady_from else None
        finally:
            rec.stop()
        m = re.search(r"tps = ([\d.]+) \(without", out or "")
        sampled = max(s[1] for s in samples)
        # after start-up (chDB's initialisers touch ~180 MB of code once; the recorder unmaps it at 20 s)
        steady = [mb for t, mb in samples if t >= 60] or [s[1] for s in samples]
        return {"minutes": minutes, "samples": samples, "breakdown": kinds, "max_rss_mb": sampled, "end_rss_mb": mem["VmRSS"],
                "steady_rss_mb": statistics.median(steady),
                "hwm_mb": mem["VmHWM"], "peak_mb": max(sampled, mem["VmHWM"]), "recorder_cpu_pct": cpu_pct,
                "steady_cpu_pct": steady_cpu,
                "tps": float(m.group(1)) if m else None, "recorder": rec.stats()}


# -- summary ----------------------------------------------------------------------------------------

def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def median_ci(values: list[float], level: float = 0.90, draws: int = 4000, seed: int = 13) -> tuple[float, float]:
    """Bootstrap interval of the median over rounds: with a handful of rounds and this VM's run-to-run
    noise, a goal missed by less than the interval's width is not shown to be missed (nor met)."""
    rng = random.Random(seed)
    meds = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(draws))
    return meds[int((1 - level) / 2 * draws)], meds[min(draws - 1, int((1 + level) / 2 * draws))]


def summarize(all_runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    runs = [r for r in all_runs if not r.get("discarded")]
    for mode in dict.fromkeys(r["mode"] for r in runs):
        mine = [r for r in runs if r["mode"] == mode]
        s: dict[str, Any] = {"runs": len(mine), "rate": spread([r["rate"] for r in mine]),
                             "noisy_runs": sum(1 for r in mine if r["noisy"]),
                             "busy_before_pct": statistics.median(r["busy_before_pct"] for r in mine)}
        if all("p99_ms" in r for r in mine):
            s["p99_ms"] = spread([r["p99_ms"] for r in mine])
        if ratios := [r["ratio"] for r in mine if "ratio" in r]:
            s["ratio"] = spread(ratios)
            s["ratio_ci90"] = median_ci(ratios)
        if changes := [r["p99_change_pct"] for r in mine if "p99_change_pct" in r]:
            s["p99_change_pct"] = spread(changes)
        if all("bpf_pct" in r for r in mine) and mode != "off":
            s["bpf_pct"] = spread([r["bpf_pct"] for r in mine])
            s["foreign_bpf_pct"] = statistics.median(r["foreign_bpf_pct"] for r in mine)
            names = dict.fromkeys(n for r in mine for n in r["bpf"])
            s["bpf"] = {n: {k: statistics.median(r["bpf"].get(n, {}).get(k, 0.0) / (r["window_s"] if k == "runs" else 1)
                                                 for r in mine)
                            for k in ("runs", "ns_per_run", "pct_core")} for n in names}
            for v in s["bpf"].values():
                v["runs_per_s"] = v.pop("runs")
        if all("recorder" in r for r in mine) and mine:
            s["recorder_cpu_pct"] = spread([r["recorder_cpu_pct"] for r in mine])
            s["rss_mb_max"] = max(r["rss_mb"] for r in mine)
            s["hwm_mb_max"] = max(r["hwm_mb"] for r in mine)
            s["rows_per_s"] = spread([r["recorder"]["rows_per_s"] for r in mine])
            s["lost_total"] = sum(r["recorder"]["lost_total"] for r in mine)
            types = dict.fromkeys(t for r in mine for t in r["recorder"]["stored"])
            s["rows_per_s_by_type"] = {t: statistics.median(r["recorder"]["stored"].get(t, 0) / r["recorder"]["recording_s"]
                                                            for r in mine) for t in types}
        out[mode] = s
    return out


def fmt_spread(s: dict[str, float] | None, f: str = ".2f", unit: str = "") -> str:
    if s is None:
        return "-"
    return f"{s['median']:{f}}{unit} [{s['min']:{f}}, {s['max']:{f}}]"


def print_workload(wl: Workload, summary: dict[str, dict[str, Any]]) -> None:
    print(f"\n{wl.title}")
    print(f"  {'mode':<17} {'median ' + wl.unit:>14} {'ratio to off':>20} {'90% CI':>13} {'of medians':>10} "
          f"{'p99 ms':>8} {'p99 change':>20} {'busy':>5} {'noisy':>5}")
    off = summary.get("off", {}).get("rate", {}).get("median")
    for mode, s in summary.items():
        p99 = f"{s['p99_ms']['median']:.2f}" if "p99_ms" in s else "-"
        ci = f"[{s['ratio_ci90'][0]:.2f}, {s['ratio_ci90'][1]:.2f}]" if "ratio_ci90" in s else "-"
        of_medians = f"{s['rate']['median'] / off:.3f}" if off and mode != "off" else "-"
        print(f"  {mode:<17} {s['rate']['median']:>14.0f} {fmt_spread(s.get('ratio')):>20} {ci:>13} {of_medians:>10} "
              f"{p99:>8} {fmt_spread(s.get('p99_change_pct'), '+.0f', '%'):>20} {s['busy_before_pct']:>4.0f}% "
              f"{s['noisy_runs']:>5}")
    print(f"  {'cost':<17} {'BPF % of a core':>20} {'recorder CPU %':>20} {'RSS / HWM MB':>13} {'rows/s':>8} {'lost':>6}")
    for mode, s in summary.items():
        if "bpf_pct" not in s and "recorder_cpu_pct" not in s:
            continue
        mem = f"{s['rss_mb_max']:.0f} / {s['hwm_mb_max']:.0f}" if "rss_mb_max" in s else "-"
        rows = f"{s['rows_per_s']['median']:.0f}" if "rows_per_s" in s else "-"
        print(f"  {mode:<17} {fmt_spread(s.get('bpf_pct')):>20} {fmt_spread(s.get('recorder_cpu_pct')):>20} "
              f"{mem:>13} {rows:>8} {s.get('lost_total', '-'):>6}")
    for mode, s in summary.items():
        if "bpf" in s and s["bpf"]:
            progs = sorted(s["bpf"].items(), key=lambda kv: -kv[1]["pct_core"])
            print(f"  {mode}: BPF programs, medians over runs (runs/s, ns per run, % of one core):")
            for name, p in progs:
                if p["runs_per_s"] > 0:
                    print(f"    {name:<26} {p['runs_per_s']:>10.0f}/s {p['ns_per_run']:>7.0f} ns {p['pct_core']:>6.2f} %")
        if "rows_per_s_by_type" in s:
            by = ", ".join(f"{t} {v:.0f}" for t, v in sorted(s["rows_per_s_by_type"].items(), key=lambda kv: -kv[1]))
            print(f"  {mode}: rows stored per s (median, whole recording): {by}")


def goal_table(summaries: dict[str, dict[str, dict[str, Any]]], memory: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Issue 13's goal table; the verdict is for the default recording (`record`)."""
    def cell(wl: str, mode: str, key: str) -> dict[str, float] | None:
        return summaries.get(wl, {}).get(mode, {}).get(key)

    rows: list[dict[str, Any]] = []
    labels = {"pgbench": "pgbench (TPC-B-like, 4 clients) with/without",
              "redis": "redis-benchmark SET/GET with/without", "pipe": "`perf bench sched pipe` pinned with/without"}
    for wl in ALL_WORKLOADS:
        if wl not in summaries:
            continue
        rec, floor = cell(wl, "record", "ratio"), cell(wl, "floor", "ratio")
        goal = floor["median"] - RATIO_SLACK[wl] if floor else None
        rows.append({"what": labels[wl], "record": fmt_spread(rec), "watch_none": fmt_spread(cell(wl, "record-watch-none", "ratio")),
                     "floor": fmt_spread(floor),
                     "goal": f">= floor - {RATIO_SLACK[wl]:.2f} = {goal:.2f}" if goal is not None else f">= floor - {RATIO_SLACK[wl]:.2f}",
                     "verdict": ratio_verdict(rec, cell(wl, "record", "ratio_ci90"), goal)
                     if rec and goal is not None else "n/a (needs record and floor)"})

    for key, what, goal_v in (("recorder_cpu_pct", "recorder process CPU, steady state", GOAL_CPU_PCT),
                              ("bpf_pct", "BPF program run time", GOAL_BPF_PCT)):
        for wl in ALL_WORKLOADS:
            if wl not in summaries:
                continue
            vals = {m: cell(wl, m, key) for m in ("record", "record-watch-none", "floor")}
            shown = {m: f"{v['median']:.2f} % of a core" if v else "-" for m, v in vals.items()}
            rec_v, floor_v = vals["record"], vals["floor"]
            row = {"what": f"{what}, {wl}", "record": shown["record"], "watch_none": shown["record-watch-none"],
                   "floor": shown["floor"], "goal": f"<= {goal_v:g} %",
                   "verdict": verdict(rec_v["median"] <= goal_v) if rec_v else "n/a"}
            if key == "recorder_cpu_pct" and wl == "pgbench" and memory and memory.get("steady_cpu_pct") is not None:
                # a short run holds at most one flush (and some hold none): the long run's minutes after
                # the first one are the steady state, with every flush, trim and retention pass in them
                cpu = memory["steady_cpu_pct"]
                row.update({"record": f"{cpu:.2f} % of a core", "verdict": verdict(cpu <= goal_v),
                            "note": f"minutes 1-{memory['minutes']:g} of the memory run (short runs: {shown['record']})"})
            if floor_v and floor_v["median"] > goal_v:
                row["verdict"] += " (beyond reach: the floor alone costs more)"
            rows.append(row)
    if memory:
        rss = memory["peak_mb"]
        basis = f"peak over {memory['minutes']:g} min of pgbench: the larger of the 10 s RSS samples' max and VmHWM"
    else:
        hwm = [s["record"]["hwm_mb_max"] for s in summaries.values() if "hwm_mb_max" in s.get("record", {})]
        rss = max(hwm) if hwm else None
        basis = "VmHWM of the short runs only; --memory-minutes 4 measures the goal's condition"
    rows.append({"what": "recorder resident memory", "note": basis,
                 "record": f"{rss:.0f} MB" if rss is not None else "-",
                 "watch_none": "-", "floor": "-", "goal": f"<= {GOAL_RSS_MB:g} MB",
                 "verdict": verdict(rss <= GOAL_RSS_MB) if rss is not None else "n/a"})
    return rows


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def ratio_verdict(rec: dict[str, float], ci: tuple[float, float] | None, goal: float) -> str:
    """MET or MISSED by the median ratio, as the goal is stated; said to be within the noise when the
    median's bootstrap interval straddles the goal (more rounds would be needed to tell)."""
    v = verdict(rec["median"] >= goal)
    if ci is not None and ci[0] < goal <= ci[1]:
        v += f" (within noise: 90% CI [{ci[0]:.2f}, {ci[1]:.2f}])"
    return v


def print_goals(rows: list[dict[str, Any]]) -> None:
    print("\nGoals (issue 13); verdict for the default recording (`record`):")
    cols = {"what": "", "record": "default recording", "watch_none": "watch list matching nothing",
            "floor": "floor (2 empty programs)", "goal": "goal", "verdict": "verdict"}
    width = {k: max(len(h), *(len(r[k]) for r in rows)) for k, h in cols.items()}
    for r in [cols, *rows]:
        print("  " + "  ".join(f"{r[k]:<{width[k]}}" for k in cols).rstrip())
    print("  ratios: median [min, max] over rounds (paired with the round's off run), its bootstrap 90% CI, and the "
          "ratio of the modes' median rates; CPU and BPF: median % of one core over the workload window")
    print("  " + "; ".join(f"{r['what']}: {r['note']}" for r in rows if "note" in r))


# -- main -------------------------------------------------------------------------------------------

def csv_choice(allowed: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    def parse(value: str) -> tuple[str, ...]:
        items = tuple(v.strip() for v in value.split(",") if v.strip())
        bad = [v for v in items if v not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {','.join(allowed)} (got {value!r})")
        return items
    return parse


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds (default: %(default)s)")
    ap.add_argument("--seconds", type=float, default=10.0, help="workload window per run (default: %(default)s)")
    ap.add_argument("--workloads", type=csv_choice(ALL_WORKLOADS), default=ALL_WORKLOADS,
                    help=f"comma-separated, from {','.join(ALL_WORKLOADS)} (default: all)")
    ap.add_argument("--modes", type=csv_choice(ALL_MODES), default=DEFAULT_MODES,
                    help=f"comma-separated, from {','.join(ALL_MODES)} (default: {','.join(DEFAULT_MODES)})")
    ap.add_argument("--record-args", default="", metavar="ARGS",
                    help="extra `kprobe record` options, one string, e.g. \"--detail full\" (default: none)")
    ap.add_argument("--memory-minutes", type=float, default=0.0,
                    help="after the rounds, pgbench this long under the recorder, RSS sampled every 10 s "
                         "(issue 13's goal: <= 256 MB over 4 min; default: %(default)s, off)")
    ap.add_argument("--memory-smaps", type=Path, metavar="DIR",
                    help="with --memory-minutes: keep the recorder's /proc/PID/smaps of every sample in DIR")
    ap.add_argument("--pgbench-scale", type=int, default=10, help="pgbench -s (default: %(default)s)")
    ap.add_argument("--settle", type=float, default=SETTLE_S,
                    help="s between attaching and the workload window: start-up is excluded, and the recorder's "
                         "start-up ends with its first code trim (RecorderConfig.trim_first_s after start), whose "
                         "re-faulted pages would otherwise land in a 6 s window (~0.4 %% of a core); the periodic "
                         "trims are in --memory-minutes' CPU (default: %(default)s)")
    ap.add_argument("--quiet-wait", type=float, default=20.0,
                    help="before each run wait up to this many s for a quiet host (default: %(default)s)")
    ap.add_argument("--quiet-busy", type=float, default=10.0,
                    help="host busy %% at or below which it counts as quiet (default: %(default)s)")
    ap.add_argument("--retries", type=int, default=2,
                    help="run a workload's round again when a run in it was disturbed, up to this many times "
                         "(default: %(default)s)")
    ap.add_argument("--no-bpf-stats", action="store_true",
                    help="leave kernel.bpf_stats_enabled alone: ratios without the stats' own cost, no BPF cost")
    ap.add_argument("--json", action="store_true", help="print one JSON object (progress stays on stderr)")
    ap.add_argument("--save", type=Path, metavar="FILE", help="also write that JSON object to FILE")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("overhead: error: needs root (eBPF, bpf_stats, starting servers as postgres)", file=sys.stderr)
        return 2
    if "off" not in args.modes:
        args.modes = ("off", *args.modes)  # every ratio is against the same round's off run
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background (SIG_IGN)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("overhead: interrupted; servers and recorders stopped", file=sys.stderr)
        return 130
    except (BenchError, subprocess.TimeoutExpired, OSError) as e:
        print(f"overhead: error: {e}", file=sys.stderr)
        return 1


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM tears down like Ctrl-C: servers, recorders and the bpf_stats sysctl are restored."""
    raise KeyboardInterrupt


def _run(args: argparse.Namespace) -> int:
    ensure_tools(args.workloads, args.modes)
    floor_objs = {m: build_floor(m) for m in args.modes if m.startswith("floor")}
    cfg = Config(args.seconds, args.modes, shlex.split(args.record_args), args.quiet_wait, args.quiet_busy,
                 args.settle, not args.no_bpf_stats, floor_objs, args.retries)
    makers: dict[str, Callable[[], Workload]] = {"pgbench": lambda: Pgbench(scale=args.pgbench_scale),
                                                 "redis": Redis, "pipe": Pipe}
    result: dict[str, Any] = {"meta": {
        "cpus": os.cpu_count(), "kernel": os.uname().release, "rounds": args.rounds, "seconds": args.seconds,
        "modes": list(args.modes), "record_args": args.record_args, "bpf_stats": cfg.bpf_stats,
        "goals": {"ratio_slack_vs_floor": RATIO_SLACK, "recorder_cpu_pct": GOAL_CPU_PCT,
                  "bpf_pct": GOAL_BPF_PCT, "rss_mb": GOAL_RSS_MB}}}
    with ExitStack() as stack:
        workloads: list[Workload] = []
        for name in args.workloads:
            wl = makers[name]()
            stack.callback(wl.stop)
            wl.start(args.seconds)
            workloads.append(wl)
        runs = run_rounds(workloads, args.rounds, cfg) if args.rounds > 0 else {}
        memory = None
        if args.memory_minutes > 0:
            pg = next((w for w in workloads if isinstance(w, Pgbench)), None)
            if pg is None:
                pg = Pgbench(scale=args.pgbench_scale)
                stack.callback(pg.stop)
                pg.start(args.seconds)
            memory = memory_run(pg, args.memory_minutes, cfg, args.memory_smaps)
    summaries = {name: summarize(r) for name, r in runs.items()}
    goals = goal_table(summaries, memory)
    result.update(workloads={wl.name: {"title": wl.title, "unit": wl.unit, "summary": summaries.get(wl.name, {}),
                                       "runs": runs.get(wl.name, [])} for wl in workloads},
                  memory=memory, goals=goals)
    if args.save:
        args.save.write_text(json.dumps(result, indent=1) + "\n")
    if args.json:
        json.dump(result, sys.stdout, indent=1)
        print()
        return 0
    print(f"host: {os.cpu_count()} CPUs, kernel {os.uname().release}; kprobe record "
          f"{args.record_args or '(defaults)'}; {args.rounds} rounds x {args.seconds:g} s, modes in rotated order: "
          f"{', '.join(args.modes)}; BPF stats {'on' if cfg.bpf_stats else 'off'} during attached runs")
    print("ratio = this run's rate / the same round's off run; medians over rounds [min, max]; busy = host busy % "
          "before the run (median); noisy = runs that began busy or with someone else's BPF attached/running")
    for wl in workloads:
        if wl.name in summaries:
            print_workload(wl, summaries[wl.name])
    if memory:
        tps = f"{memory['tps']:.0f}" if memory["tps"] is not None else "?"
        print(f"\nmemory: pgbench {memory['minutes']:g} min under `kprobe record {args.record_args}`: RSS sampled max "
              f"{memory['max_rss_mb']:.0f} MB, median after the first minute {memory['steady_rss_mb']:.0f} MB, "
              f"at end {memory['end_rss_mb']:.0f} MB, VmHWM {memory['hwm_mb']:.0f} MB (start-up included); "
              f"recorder CPU {memory['recorder_cpu_pct']:.2f} % of a core over the whole run, "
              + (f"{memory['steady_cpu_pct']:.2f} % after the first minute; " if memory.get("steady_cpu_pct") is not None
                 else "; ") + f"{tps} tps; "
              f"rows/s {memory['recorder']['rows_per_s']:.0f}, lost {memory['recorder']['lost_total']}")
        print("  RSS every 10 s (MB): " + " ".join(f"{mb:.0f}" for _, mb in memory["samples"]))
        for minute in sorted({m for m in (1, 2, 4) if m <= memory["minutes"]} | {memory["minutes"]}):
            near = [b for b in memory["breakdown"] if b["t_s"] <= minute * 60 + 5]
            if near:
                print(f"  at {near[-1]['t_s']:>4} s: {breakdown_line(near[-1])}")
    print_goals(goals)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
