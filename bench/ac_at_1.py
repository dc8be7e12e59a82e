"""Benchmark: top-1 accuracy (AC@1) of `why` on scenarios drawn at random, under the default recording.

Why: the root-cause engine is judged on scenarios nobody here wrote (other process
names, timings and mixes). A fixed suite of kernel tests pins one instance of each
kind; this draws new ones: the kind of fault, the process names, how long the fault
lasts (50-500 ms) and whether a second fault hits an unrelated process at the same
time. A draw is right when `why` over the victim's measured window names the kind
AND the culprit process the scenario injected (its root cause, the first answer).

Kinds drawn (each a real fault on the real kernel, recorded system-wide with the
policy `kprobe record` uses when given no option; nothing is put on a watch list):

* ``cpu_preemption``: a CPU hog (SCHED_RR) on the victim's CPU while the victim
  (SCHED_RR, same priority, so the slices are the same on any host) computes;
* ``flock`` / ``fcntl``: a holder keeps a file lock (flock, POSIX F_SETLKW) that the
  victim then blocks on (``lock_contention``, culprit the holder);
* ``cpu_throttling``: the victim computes in a cgroup with a CPU quota of 10-30 % of
  a CPU, alone (culprit: itself) or beside a batch job spending most of the quota on
  the other CPU (culprit: the batch job);
* ``disk_io``: the victim appends 4 KiB and fsyncs it right after a flood process
  started to fsync fault_ms worth of writes to the same disk, throttled to 2 MiB/s
  (a loop device and a blkio cgroup: the queue is as long on any host; culprit: the
  flood, although the throttle's kworker dispatches its writes).

A decoy (``--mix``: half of the draws) is a second fault at the same time on
processes that have nothing to do with the victim: a hog beside an unrelated
spinner on the other CPU, or a lock held between two other processes.

Memory-cgroup reclaim is not drawn: its ground truth needs a throttled loop device
and retries (tests/causal/test_why_faults_kernel.py), too slow to draw in bulk.

Usage: sudo python3 bench/ac_at_1.py [--draws 40] [--seed 1] [--kinds cpu_preemption,flock,...] [--json]
The CI test (tests/causal/test_ac_at_1_kernel.py) runs a handful of draws with a fixed seed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.workloads.throttled_disk import throttled_disk  # noqa: E402  (the rig the kernel tests use)

FILELOCK = REPO / "tests" / "workloads" / "causal_filelock.py"
RR = ("chrt", "-r", "10")
# the fair-class victims (a quota only throttles fair tasks) run at nice -20: on a shared host other load then
# delays them little beside the injected fault, whose ground truth is what is judged (the engine does not care)
NICE = ("nice", "-n", "-20")
KINDS = ("cpu_preemption", "flock", "fcntl", "cpu_throttling", "disk_io")
EXPECTED_KIND = {"cpu_preemption": "cpu_preemption", "flock": "lock_contention", "fcntl": "lock_contention",
                 "cpu_throttling": "cpu_throttling", "disk_io": "disk_io"}
DECOYS = ("hog_elsewhere", "lock_elsewhere")
WORDS = ("ledger", "risk", "fx", "quote", "settle", "clearing", "recon", "posting", "payments", "orders", "batch",
         "nightly", "audit", "pricer", "gateway", "feed", "limits", "margin", "swift", "ach", "card", "auth")

# named argv[1]; after a line on stdin (or at the wall-clock time argv[3] ns, which is then its t0): computes
# argv[2] ms of its own CPU time, prints "pid t0 t1"
SPIN_CPU = ("import ctypes,os,sys,time\nctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)\n"
            "print('ready', flush=True)\nif len(sys.argv)>3:\n  t0=int(sys.argv[3])\n"
            "  time.sleep(max(0.0,(t0-time.time_ns())/1e9))\nelse:\n  sys.stdin.readline()\n  t0=time.time_ns()\n"
            "w=float(sys.argv[2])/1000\n"
            "c=time.process_time()\nwhile time.process_time()-c<w: pass\n"
            "print(os.getpid(), t0, time.time_ns(), flush=True)")
# named argv[1]: spins argv[2] ms of wall time in argv[3] threads, the main one among them (a spinning thread
# created later would queue behind the victim's next slice) (a hog, a batch job, a decoy's victim); with
# argv[4] "wait", only after printing "ready" and reading a line (so its start-up is not part of the fault); with
# "at" and argv[5] ns, at that wall-clock time
SPIN_WALL = ("import ctypes,sys,time,threading\nctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)\n"
             "if len(sys.argv)>4 and sys.argv[4]=='wait':\n  print('ready', flush=True)\n  sys.stdin.readline()\n"
             "if len(sys.argv)>5 and sys.argv[4]=='at':\n  print('ready', flush=True)\n"
             "  time.sleep(max(0.0,(int(sys.argv[5])-time.time_ns())/1e9))\n"
             "def spin():\n  e=time.monotonic()+float(sys.argv[2])/1000\n  while time.monotonic()<e: pass\n"
             "n=int(sys.argv[3]) if len(sys.argv)>3 else 1\nts=[threading.Thread(target=spin) for _ in range(n-1)]\n"
             "[t.start() for t in ts]\nspin()\n[t.join() for t in ts]")
# named argv[1]: after a line on stdin, appends argv[3] bytes to argv[2] and fsyncs it (with argv[4], that word is
# printed between the write and the fsync); prints "pid t0 t1"
WRITE_FSYNC = ("import ctypes,os,sys,time\nctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)\n"
               "fd=os.open(sys.argv[2], os.O_WRONLY|os.O_CREAT|os.O_APPEND, 0o600)\nb=os.urandom(int(sys.argv[3]))\n"
               "print('ready', flush=True)\nsys.stdin.readline()\nt0=time.time_ns()\nos.write(fd, b)\n"
               "len(sys.argv)>4 and print(sys.argv[4], flush=True)\nos.fsync(fd)\n"
               "print(os.getpid(), t0, time.time_ns(), flush=True)")
DISK_BPS = 2 << 20      # the throttled disk's write rate: a flood of fault_ms worth keeps its queue that long


@dataclass
class Scenario:
    """One draw: the fault, the names, how long the fault lasts, and the decoy beside it (None: alone)."""

    kind: str
    victim: str
    culprit: str
    fault_ms: int
    variant: str = ""          # cpu_throttling: "alone" or "batch"; others ""
    quota_pct: int = 0
    decoy: str | None = None
    decoy_names: tuple[str, str] = ("", "")


@dataclass
class Outcome:
    """What ran and what `why` answered: right when kind and culprit process match."""

    scenario: Scenario
    victim_pid: int = 0
    culprit_pid: int = 0
    window_ms: float = 0.0
    got_kind: str | None = None
    got_pid: int | None = None
    got_comm: str | None = None
    summary: str = ""
    right: bool = False
    error: str = ""
    invalid: bool = False      # the fault did not cause the victim's delay (host load did): not judged
    why_ms: float = 0.0
    extra: dict = field(default_factory=dict)


def _name(rng: random.Random, taken: set[str]) -> str:
    while True:
        n = f"{rng.choice(WORDS)}-{rng.choice(WORDS)}"[:15]
        if n not in taken:
            taken.add(n)
            return n


def draw(rng: random.Random, kinds: tuple[str, ...] = KINDS, mix: float = 0.5) -> Scenario:
    """A scenario of one of ``kinds``: random names (15 chars, as comm keeps), fault 50-500 ms, a decoy or not."""
    taken: set[str] = set()
    kind = rng.choice(kinds)
    s = Scenario(kind, _name(rng, taken), _name(rng, taken), rng.randint(50, 500))
    if kind == "cpu_throttling":
        s.variant = rng.choice(("alone", "batch"))
        s.quota_pct = rng.randint(10, 30)
    if rng.random() < mix:
        s.decoy = rng.choice(DECOYS)
        s.decoy_names = (_name(rng, taken), _name(rng, taken))
    return s


def _cpus() -> tuple[int, int]:
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[-1], cpus[0]      # (the victim's CPU, the other one)


def _py(code: str, *args: object, prefix: tuple[str, ...] = (), **kw: object) -> subprocess.Popen:
    return subprocess.Popen([*prefix, sys.executable, "-c", code, *map(str, args)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, **kw)  # type: ignore[call-overload]


def _ready(p: subprocess.Popen) -> None:
    assert p.stdout is not None
    line = p.stdout.readline().strip()
    if not line.startswith("ready"):
        raise RuntimeError(f"workload did not start: {line!r}")


def _result(p: subprocess.Popen, timeout: float = 60) -> tuple[int, int, int]:
    out, _ = p.communicate(timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"workload exited {p.returncode}: {out!r}")
    pid, t0, t1 = (int(x) for x in out.split()[-3:])
    return pid, t0, t1


def _go(p: subprocess.Popen) -> None:
    assert p.stdin is not None
    p.stdin.write("go\n")
    p.stdin.flush()


@contextmanager
def _reaped(procs: list[subprocess.Popen]) -> Iterator[list[subprocess.Popen]]:
    """Every process started for a draw is killed and waited for, whatever happened."""
    try:
        yield procs
    finally:
        for p in procs:
            with suppress(OSError):
                p.kill()
            with suppress(subprocess.TimeoutExpired):
                p.wait(30)


@contextmanager
def quota_cgroup(pct: int) -> Iterator[Path]:
    """A fresh cgroup with a CPU quota of ``pct`` % of one CPU (v1 cpu or v2 cpu.max)."""
    from kprobe.agent.cgroup_cpu import Hierarchy

    h = Hierarchy.find()
    if h is None:
        raise RuntimeError("no cpu controller hierarchy to set a quota in")
    d = h.root / f"kp-ac1-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    try:
        # the group's weight at the maximum: a member's nice value counts only inside its group, and the group
        # competes with the host's other load as one task; at full weight it gets its quota and hits it
        if h.v2:
            (d / "cpu.max").write_text(f"{pct * 1000} 100000")
            (d / "cpu.weight").write_text("10000")
        else:
            (d / "cpu.cfs_period_us").write_text("100000")
            (d / "cpu.cfs_quota_us").write_text(str(pct * 1000))
            (d / "cpu.shares").write_text("262144")
        yield d
    finally:
        for pid in (d / "cgroup.procs").read_text().split():
            with suppress(OSError):
                os.kill(int(pid), 9)
        for _ in range(100):
            try:
                d.rmdir()
                break
            except OSError:        # members still exiting
                time.sleep(0.1)


class FaultMissed(RuntimeError):
    """The injected fault did not cause most of the victim's delay (host load did): the draw tests nothing."""


def _throttled_ns(cg: Path) -> int:
    """The group's own throttled time so far (v1 throttled_time ns, v2 throttled_usec): the ground truth."""
    st = dict(line.split() for line in (cg / "cpu.stat").read_text().splitlines())
    return int(st["throttled_time"]) if "throttled_time" in st else int(st["throttled_usec"]) * 1000


def _decoy(s: Scenario, procs: list[subprocess.Popen], work: Path, ms: int) -> None:
    """The second fault, on processes unrelated to the victim, lasting about as long as the scenario."""
    a, b = s.decoy_names
    _, other = _cpus()
    if s.decoy == "hog_elsewhere":
        procs.append(_py(SPIN_WALL, a, ms, prefix=(*RR, "taskset", "-c", str(other))))
        procs.append(_py(SPIN_WALL, b, ms, prefix=(*RR, "taskset", "-c", str(other))))
    elif s.decoy == "lock_elsewhere":
        path = work / f"decoy-{uuid.uuid4().hex[:6]}.lock"
        h = subprocess.Popen([sys.executable, str(FILELOCK), "holder", "flock", str(path), str(ms), a],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(h)
        _ready(h)
        v = subprocess.Popen([sys.executable, str(FILELOCK), "victim", "flock", str(path), "0", b],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(v)
        _ready(v)
        _go(v)
        _go(h)


def run_scenario(s: Scenario, work: Path) -> tuple[int, int, int, int]:
    """Run the draw on the real kernel: (victim pid, culprit pid, t0, t1), the victim's measured window."""
    vcpu, _ = _cpus()
    procs: list[subprocess.Popen] = []
    with _reaped(procs):
        if s.kind == "cpu_preemption":
            # both start at a set wall-clock time, the hog 20 ms first (a harness telling them to start would
            # itself wait for a CPU behind the real-time hogs): the victim, same RR priority, waits for its slice
            at = time.time_ns() + 800_000_000
            victim = _py(SPIN_CPU, s.victim, 150, at + 20_000_000, prefix=(*RR, "taskset", "-c", str(vcpu)))
            hog = _py(SPIN_WALL, s.culprit, s.fault_ms, 1, "at", at, prefix=(*RR, "taskset", "-c", str(vcpu)))
            procs += [victim, hog]
            _ready(victim)
            _ready(hog)
            if time.time_ns() > at:
                raise FaultMissed("the workloads took longer to start than the 800 ms they were given")
            _decoy(s, procs, work, s.fault_ms + 300)
            pid, t0, t1 = _result(victim)
            # 150 ms of work and what is left of the hog's slice (or of its run) after its 20 ms head start
            if t1 - t0 < 150e6 + 0.5 * max(0, min(s.fault_ms, 100) - 20) * 1e6:
                raise FaultMissed(f"computed 150 ms in {(t1 - t0) / 1e6:.0f} ms: the hog never took its CPU")
            return pid, hog.pid, t0, t1
        if s.kind in ("flock", "fcntl"):
            path = work / f"{s.kind}-{uuid.uuid4().hex[:6]}.lock"
            holder = subprocess.Popen([sys.executable, str(FILELOCK), "holder", s.kind, str(path), str(s.fault_ms),
                                       s.culprit], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            procs.append(holder)
            _ready(holder)
            victim = subprocess.Popen([sys.executable, str(FILELOCK), "victim", s.kind, str(path), "0", s.victim],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            procs.append(victim)
            _ready(victim)
            _decoy(s, procs, work, s.fault_ms + 300)
            _go(victim)
            _go(holder)
            pid, t0, t1 = _result(victim)
            if t1 - t0 < 0.5 * s.fault_ms * 1e6:
                raise FaultMissed(f"waited {(t1 - t0) / 1e6:.0f} ms for a lock held {s.fault_ms} ms")
            return pid, holder.pid, t0, t1
        if s.kind == "cpu_throttling":
            with quota_cgroup(s.quota_pct) as cg:
                batch = None
                if s.variant == "batch":
                    # on the other CPU: it spends the cgroup's quota there, the victim is throttled on its own CPU
                    # (on the victim's CPU it would also take turns with it: preemption and throttling mixed)
                    batch = _py(SPIN_WALL, s.culprit, s.fault_ms + 2000, 4, prefix=("taskset", "-c", str(_cpus()[1])))
                    procs.append(batch)
                    (cg / "cgroup.procs").write_text(str(batch.pid))
                    time.sleep(0.3)
                # the victim computes what keeps it throttled about fault_ms, and at least 3.2 periods' worth of quota:
                # a process throttled once or twice looks like any other preemption (the group's counter is
                # sampled every 250 ms; a member is seen only while the group is throttled at a sample)
                q = s.quota_pct
                victim = _py(SPIN_CPU, s.victim, max(3.2 * q, s.fault_ms * q / (100 - q)),
                             prefix=(*NICE, "taskset", "-c", str(vcpu)))
                procs.append(victim)
                (cg / "cgroup.procs").write_text(str(victim.pid))
                _ready(victim)
                _decoy(s, procs, work, s.fault_ms + 300)
                before = _throttled_ns(cg)
                _go(victim)
                pid, t0, t1 = _result(victim)
                truth = _throttled_ns(cg) - before
                if truth < 0.5 * (t1 - t0):
                    # on a loaded host the group may not even get its quota: then the quota is not what delayed it
                    raise FaultMissed(f"throttled {truth / 1e6:.0f} ms of the victim's {(t1 - t0) / 1e6:.0f} ms")
                time.sleep(0.6)       # the cgroup's counters are sampled every 250 ms: one sample after the window
                for p in procs:
                    with suppress(OSError):
                        p.kill()
                return pid, batch.pid if batch else pid, t0, t1
        if s.kind == "disk_io":
            # both write to one disk; the flood's fsync queues about fault_ms of writes before the victim's
            with throttled_disk(work, DISK_BPS) as (mnt, cg):
                # the throttle lets a slice's worth (100 ms) through at once: fault_ms of queue come after it
                flood = _py(WRITE_FSYNC, s.culprit, mnt / "flood.bin", DISK_BPS * (s.fault_ms + 150) // 1000,
                            "syncing")
                victim = _py(WRITE_FSYNC, s.victim, mnt / "ledger.log", 4096, prefix=NICE)
                procs += [flood, victim]
                for p in (flood, victim):
                    (cg / "cgroup.procs").write_text(str(p.pid))
                    _ready(p)
                _decoy(s, procs, work, s.fault_ms + 300)
                _go(flood)
                assert flood.stdout is not None
                flood.stdout.readline()         # its data is in the page cache and its fsync starts
                time.sleep(0.05)                # its writes are queued in the throttle by now
                _go(victim)
                pid, t0, t1 = _result(victim)
                _result(flood)
                if t1 - t0 < 0.5 * s.fault_ms * 1e6:
                    raise FaultMissed(f"fsync took {(t1 - t0) / 1e6:.0f} ms behind {s.fault_ms} ms of queued writes")
                return pid, flood.pid, t0, t1
    raise ValueError(f"unknown kind {s.kind}")


def judge(store: object, s: Scenario, vpid: int, cpid: int, t0: int, t1: int) -> Outcome:
    """`why` over the victim's window: right when the root cause's kind and culprit process are the injected ones."""
    from kprobe.causal.why import phrase, why

    o = Outcome(s, vpid, cpid, (t1 - t0) / 1e6, extra={"t0": t0, "t1": t1})
    c0 = time.perf_counter()
    a = why(store, vpid, t0, t1)    # type: ignore[arg-type]
    o.why_ms = (time.perf_counter() - c0) * 1000
    rc = a.root_cause
    if rc is not None:
        o.got_kind, o.got_pid, o.got_comm = rc.kind, rc.culprit.pid, rc.culprit.comm
        o.summary = phrase(rc)
    o.right = o.got_kind == EXPECTED_KIND[s.kind] and o.got_pid == cpid
    return o


def default_session(data: Path):
    """The embedded session `kprobe record` runs with no option: bounded, system-wide, no watch list."""
    from kprobe.agent.recorder import RecorderConfig
    from kprobe.cli import build_parser
    from kprobe.cli.recording import recorder_config
    from kprobe.embedded import EmbeddedSession

    probes = recorder_config(build_parser().parse_args(["record"]), watching=False).probes
    return EmbeddedSession(data, RecorderConfig(probes=probes, flush_ms=50)).start()


def run_draws(session: object, work: Path, scenarios: list[Scenario], log=print) -> list[Outcome]:
    """Each scenario run, drained, judged; a scenario that could not run is an error, not a miss."""
    from kprobe.causal.why import NoDataError

    out = []
    for s in scenarios:
        try:
            vpid, cpid, t0, t1 = run_scenario(s, work)
            if not session.recorder.wait_drained(60.0):      # type: ignore[attr-defined]
                raise RuntimeError("recorder did not drain in 60 s")
            o = judge(session.store, s, vpid, cpid, t0, t1)    # type: ignore[attr-defined]
        except NoDataError as e:       # the engine had nothing to say: a miss, not a scenario that failed to run
            o = Outcome(s, vpid, cpid, (t1 - t0) / 1e6, summary=f"no answer: {e}")
        except FaultMissed as e:
            o = Outcome(s, error=f"fault missed: {e}", invalid=True)
        except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as e:
            o = Outcome(s, error=f"{type(e).__name__}: {e}")
        tag = "OK   " if o.right else ("SKIP " if o.invalid else ("ERR  " if o.error else "MISS "))
        log(tag + json.dumps(_row(o)))
        out.append(o)
    return out


def _row(o: Outcome) -> dict:
    s = o.scenario
    return {"kind": s.kind, "variant": s.variant, "fault_ms": s.fault_ms, "decoy": s.decoy, "victim": s.victim,
            "culprit": s.culprit, "window_ms": round(o.window_ms, 1), "victim_pid": o.victim_pid,
            "window": [o.extra.get("t0"), o.extra.get("t1")], "got": [o.got_kind, o.got_pid, o.got_comm],
            "want": [EXPECTED_KIND[s.kind], o.culprit_pid], "summary": o.summary, "error": o.error,
            "why_ms": round(o.why_ms, 1)}


def ac_at_1(outcomes: list[Outcome]) -> float:
    judged = [o for o in outcomes if not o.error]
    return sum(o.right for o in judged) / len(judged) if judged else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draws", type=int, default=40)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--mix", type=float, default=0.5, help="share of draws with a decoy fault (default %(default)s)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/ac_at_1.py records from the kernel: run as root", file=sys.stderr)
        return 2
    subprocess.run(["make", "-s", "-C", str(REPO / "probes")], check=True)
    rng = random.Random(args.seed)
    kinds = tuple(k for k in args.kinds.split(",") if k)
    scenarios = [draw(rng, kinds, args.mix) for _ in range(args.draws)]
    with tempfile.TemporaryDirectory(prefix="kprobe-ac1-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        session = default_session(work / "data")
        try:
            outs = run_draws(session, work, scenarios, log=(lambda _m: None) if args.json else print)
        finally:
            session.stop()
    per: dict[str, list[int]] = {}
    for o in outs:
        if not o.error:
            v = per.setdefault(o.scenario.kind + (f"/{o.scenario.variant}" if o.scenario.variant else ""), [0, 0])
            v[0] += o.right
            v[1] += 1
    res = {"seed": args.seed, "draws": len(outs), "errors": sum(bool(o.error) for o in outs),
           "fault_missed": sum(o.invalid for o in outs),
           "ac_at_1": round(ac_at_1(outs), 3), "per_kind": {k: f"{a}/{n}" for k, (a, n) in sorted(per.items())},
           "with_decoy": f"{sum(o.right for o in outs if o.scenario.decoy and not o.error)}/"
                         f"{sum(1 for o in outs if o.scenario.decoy and not o.error)}",
           "misses": [_row(o) for o in outs if not o.right and not o.error],
           "loadavg": os.getloadavg()[0], "scenarios": [asdict(o.scenario) for o in outs]}
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        print(f"AC@1 {res['ac_at_1']} over {res['draws'] - res['errors']} draws (seed {args.seed}, {res['errors']} "
              f"not judged: {res['fault_missed']} whose fault did not cause the delay); per kind {res['per_kind']}; with a decoy {res['with_decoy']}; load "
              f"{res['loadavg']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
