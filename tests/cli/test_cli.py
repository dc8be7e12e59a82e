"""The CLI contract, end to end, as a user runs it (separate processes, real probes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.kernel

KPROBE = [sys.executable, "-m", "kprobe"]


def kp(*args: str, check: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([*KPROBE, *args], capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"kprobe {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


@pytest.fixture
def root(probes_built):
    if os.geteuid() != 0:
        pytest.skip("attaching eBPF probes needs root (CI runs as root)")


def test_run_records_command_and_children_then_events_json(root, tmp_path):
    data, out = tmp_path / "d", tmp_path / "x"
    before = time.time_ns()
    kp("run", "--data", str(data), "--", "sh", "-c", f"sleep 0.2; echo hi > {out}")
    after = time.time_ns()
    assert out.read_text() == "hi\n"
    events = json.loads(kp("events", "--data", str(data), "--json").stdout)
    long_waits = [e for e in events if e["type"] == "offcpu" and e["dur_ns"] > 150_000_000]
    # the child `sleep` sleeps 200 ms, and its parent shell waits for it as long: both are followed
    assert {e["comm"] for e in long_waits} == {"sleep", "sh"}, long_waits
    sleeps = [e for e in long_waits if e["comm"] == "sleep"]
    assert len(sleeps) == 1 and sleeps[0]["reason"] == "sleep", sleeps
    # a timer never fires early; on a loaded VM it fires late (2.2 ms was seen beside a Kafka benchmark),
    # and `sleep` cannot report what it really slept: the test on sleeper.py holds the +-2 ms bound
    assert 199_900_000 <= sleeps[0]["blocked_ns"] < 210_000_000, {k: sleeps[0].get(k) for k in (
        "ts", "wake_ts", "end_ts", "blocked_ns", "runq_ns", "cpu_off", "cpu_on", "waker_comm", "waker_pid")}
    writes = [e for e in events if e["type"] == "syscall" and e["syscall"] == "write" and e["bytes"] == 3]
    assert len(writes) == 1 and writes[0]["fd"] == 1, writes
    for e in sleeps + writes:
        assert before <= e["ts"] <= after, e  # UTC ns since the epoch
    text = kp("events", "--data", str(data), "--type", "offcpu", "syscall").stdout
    assert "off-CPU" in text and "write fd=1 3 B" in text


def test_ring_overflow_drops_are_exact_and_reported(root, tmp_path):
    """A 4 KiB ring that is never drained while N events arrive: stored + dropped == N exactly."""
    from kprobe.schemas import layouts

    n = 1000
    data = tmp_path / "d"
    slot = 8 + layouts.KP_SYSCALL.itemsize
    shm = f"/dev/shm/kp-overflow-{os.getpid()}"
    script = (f"import os,sys\nsys.stdin.readline()\nfd=os.open({shm!r}, os.O_WRONLY|os.O_CREAT)\n"
              f"for _ in range({n}): os.fdatasync(fd)\n")
    work = subprocess.Popen(["python3", "-c", script], stdin=subprocess.PIPE)
    rec = subprocess.Popen([*KPROBE, "record", "--data", str(data), "--ring-kb", "4", "--syscalls", "fdatasync",
                            "--poll-ms", "600000", "--watch-pid", str(work.pid)], stderr=subprocess.PIPE, text=True)
    try:
        line = rec.stderr.readline()
        while not line.startswith("kprobe: recording "):
            assert line, "recorder exited before recording"
            line = rec.stderr.readline()
        work.communicate(b"go\n", timeout=60)
        assert work.returncode == 0
    finally:
        rec.send_signal(signal.SIGINT)
        rec.wait(60)
        os.unlink(shm)
    stats = json.loads(kp("stats", "--data", str(data), "--json").stdout)
    stored = stats["stored"]["syscall"]
    dropped = stats["recorder"]["kernel_drops_total"]["syscall"]
    assert stored == 4096 // slot, stats["stored"]
    assert stored + dropped == n, (stored, dropped)
    rec_stats = stats["recorder"]
    lost = sum(rec_stats["kernel_drops_total"].values()) + sum(rec_stats["write_errors"].values())
    assert rec_stats["lost_total"] == lost >= dropped  # other 4 KiB rings may overflow too; all are counted
    text = kp("stats", "--data", str(data)).stdout
    assert f"lost total: {lost}" in text and "syscall drops per CPU" in text
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()   # which machine and boot, and its clock
    assert rec_stats["host"]["boot_id"] == boot and f"boot {boot}" in text, rec_stats["host"]
    assert "wall clock" in text and rec_stats["host"]["clock"]["state"], text


def test_killed_recorder_leaves_no_programs_attached(root, tmp_path):
    rec = subprocess.Popen([*KPROBE, "record", "--data", str(tmp_path / "d")], stderr=subprocess.PIPE, text=True)
    line = rec.stderr.readline()
    while not line.startswith("kprobe: recording "):
        assert line, "recorder exited early"
        line = rec.stderr.readline()
    progs = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True).stdout
    assert any(p.get("name", "").startswith("kp_") for p in json.loads(progs))
    rec.kill()
    rec.wait(10)
    time.sleep(0.5)  # the kernel frees links and programs when the last fd closes
    progs = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True).stdout
    # a program no live process holds would be ours, left behind; another live recorder's (a bench, a
    # second checkout's tests) are held by that process (bpftool cannot always name holders: fdinfo can)
    held = _held_prog_ids()
    leftover = [p for p in json.loads(progs) if p.get("name", "").startswith("kp_") and p["id"] not in held]
    assert not leftover, leftover


def _held_prog_ids() -> set[int]:
    """Ids of the BPF programs some live process holds an fd (program or link) of."""
    ids: set[int] = set()
    for info in Path("/proc").glob("[0-9]*/fdinfo/*"):
        try:
            text = info.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("prog_id:"):
                ids.add(int(line.split()[1]))
    return ids


def test_bad_arguments_and_environment_give_clear_errors(root, tmp_path):
    r = kp("events", "--data", str(tmp_path / "none"), check=False)
    assert r.returncode == 2 and "no recording" in r.stderr
    r = kp("events", "--data", str(tmp_path), "--from", "yesterday", check=False)
    assert r.returncode == 2 and "not a timestamp" in r.stderr
    r = kp("events", "--data", str(tmp_path), "--type", "bogus", check=False)
    assert r.returncode == 2 and "unknown event type" in r.stderr
    r = kp("record", "--data", str(tmp_path / "d"), "--ring-kb", "3", "--duration", "1", check=False)
    assert r.returncode == 2 and "power of two" in r.stderr
    r = kp("run", "--data", str(tmp_path / "d"), check=False)
    assert r.returncode == 2 and "needs a command" in r.stderr
    r = kp("run", "--data", str(tmp_path / "d"), "--", "true", check=False,
           env={**os.environ, "KPROBE_OTLP_GRPC_PORT": "grpc"})
    assert r.returncode == 2 and "$KPROBE_OTLP_GRPC_PORT='grpc' is not a port number" in r.stderr, r.stderr
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = kp("record", "--data", str(blocker / "sub"), "--duration", "1", check=False)
    assert r.returncode == 2 and "cannot create data directory" in r.stderr
    # without the capabilities: still uid 0, but CAP_SYS_ADMIN/CAP_BPF/CAP_PERFMON dropped from the bounding set
    r = subprocess.run(["setpriv", "--bounding-set=-sys_admin,-bpf,-perfmon", *KPROBE, "record", "--data",
                        str(tmp_path / "d"), "--duration", "1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "needs root" in r.stderr, r.stderr


def _thread_caps(pid: int) -> dict[str, tuple[int, int, int]]:
    """Per thread of ``pid``: (CapEff, CapBnd, NoNewPrivs)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            f = dict(line.split(":", 1) for line in (task / "status").read_text().splitlines() if ":" in line)
        except OSError:
            continue
        out[f"{(task / 'comm').read_text().strip()}({task.name})"] = (
            int(f["CapEff"].strip(), 16), int(f["CapBnd"].strip(), 16), int(f["NoNewPrivs"].strip()))
    return out


@pytest.mark.parametrize("keep", [False, True])
def test_recorder_gives_up_root_once_the_probes_are_attached(root, tmp_path, keep):
    """Every thread (chDB's, gRPC's, the drain's) runs with CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE and
    CAP_DAC_READ_SEARCH only, and no_new_privs; recording and queries work as before."""
    data = tmp_path / "d"
    rec = subprocess.Popen([*KPROBE, "record", "--data", str(data), "--no-otlp", "--duration", "60",
                            *(["--keep-privileges"] if keep else [])], stderr=subprocess.PIPE, text=True)
    try:
        line = rec.stderr.readline()
        while not line.startswith("kprobe: recording "):
            assert line, "recorder exited early"
            line = rec.stderr.readline()
        caps = _thread_caps(rec.pid)
        want = sum(1 << b for b in (2, 19, 38, 39))   # DAC_READ_SEARCH, SYS_PTRACE, PERFMON, BPF
        if keep:
            assert all(eff & (1 << 21) for eff, _, _ in caps.values()), caps   # CAP_SYS_ADMIN kept
        else:
            assert len(caps) > 5 and all(v == (want, want, 1) for v in caps.values()), caps
        sleeper = subprocess.run([sys.executable, "-c", "import os, time; time.sleep(0.3); print(os.getpid())"],
                                 capture_output=True, text=True, check=True)
        pid = int(sleeper.stdout)
        rows = json.loads(kp("events", "--data", str(data), "--pid", str(pid), "--type", "offcpu", "--json").stdout)
        assert any(r["dur_ns"] >= 250_000_000 for r in rows), rows
    finally:
        rec.send_signal(signal.SIGINT)
        rec.wait(60)
    assert rec.returncode == 0


def test_run_gives_up_root_too_and_its_command_still_becomes_the_invoking_user(root, tmp_path):
    data = tmp_path / "d"
    # a command the invoking user (nobody here) can run: not this venv's python, under /root
    script = 'echo "$PPID $$ $(id -u)"; sleep 1'
    env = {**os.environ, "SUDO_UID": "65534", "SUDO_GID": "65534", "SUDO_USER": "nobody"}
    run = subprocess.Popen([*KPROBE, "run", "--data", str(data), "--no-otlp", "--", "/bin/sh", "-c", script],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd="/")
    assert run.stdout is not None
    ppid, pid, uid = map(int, run.stdout.readline().split())
    assert ppid == run.pid and uid == 65534   # the command: the invoking user, started after the drop
    caps = _thread_caps(run.pid)
    want = sum(1 << b for b in (2, 5, 19, 38, 39))   # DAC_READ_SEARCH, KILL, SYS_PTRACE, PERFMON, BPF
    assert len(caps) > 3 and all(v == (want, want, 1) for v in caps.values()), caps
    out, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    rows = json.loads(kp("events", "--data", str(data), "--pid", str(pid), "--type", "offcpu", "--json").stdout)
    assert any(r["dur_ns"] >= 800_000_000 for r in rows), rows
