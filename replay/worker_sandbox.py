"""Run one checked replay in a child process that holds no privilege once the log is loaded.

The worker itself may run as root (it reads recordings the recorder wrote 0600). Each replay is a
fresh ``python -m kprobe.replay.worker_sandbox`` process, started with an empty environment in a
private directory (``mkdtemp`` under ``work_root``, 0700, owned by the replay user). That child:

1. loads the replay log while it is still root (the only thing it needs root for);
2. with ``isolate``: enters new network and mount namespaces (no interface but a down loopback:
   nothing the replayed program sends leaves; ``/tmp``, ``/var/tmp`` and ``/dev/shm`` are read-only
   in it, only its private directory is writable);
3. drops every group and switches to the configured user (``setresgid``/``setresuid``), keeps
   ``PR_SET_NO_NEW_PRIVS`` (no setuid binary can give privilege back), and re-marks itself
   dumpable so it may still trace its own child (the kernel clears that flag on a uid change);
4. runs the replay engine with a clean environment and prints the result as JSON; what-if replays
   use the engine of replay/worker_whatif.py, which answers calls with effects outside the process
   (network, file changes, signals, forks, execs) that the recording does not hold with EPERM.

So a what-if replay that lets a syscall run for real runs it as an unprivileged user, without a
network, in a directory that is deleted afterwards. A crash, a hang past ``timeout_s`` or a
garbage answer of the child is an ``ok: false`` result, never the worker's death.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import msgspec

CLONE_NEWNS, CLONE_NEWNET = 0x00020000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 0x4000, 1 << 18
PR_SET_NO_NEW_PRIVS, PR_SET_DUMPABLE = 38, 4
CLEAN_PATH = "/usr/local/bin:/usr/bin:/bin"
PRIVATE_TMP = ("/tmp", "/var/tmp", "/dev/shm")


class Job(msgspec.Struct):
    """What the worker hands the child on stdin."""

    request_id: str
    session: str
    pid: int | None
    argv: list[str]
    inject: list[str]
    strict: bool
    cpu: int
    deadline_ms: float | None
    uid: int
    gid: int
    isolate: bool
    workdir: str


def clean_env(workdir: str) -> dict[str, str]:
    """The only environment a replay sees: nothing of the worker's (credentials, Kafka settings)."""
    return {"PATH": CLEAN_PATH, "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"}


def run_job(job: Job, timeout_s: float, work_root: Path):  # -> worker.ReplayResultMsg
    """Start the child for ``job`` (its workdir is made here) and turn whatever happens into a result."""
    from kprobe.replay.worker import ReplayResultMsg

    work_root.mkdir(parents=True, exist_ok=True, mode=0o711)
    workdir = tempfile.mkdtemp(prefix="replay-", dir=work_root)
    try:
        if os.geteuid() == 0:
            os.chown(workdir, job.uid, job.gid)
        os.chmod(workdir, 0o700)
        job = msgspec.structs.replace(job, workdir=workdir)
        try:
            p = subprocess.run([sys.executable, "-m", "kprobe.replay.worker_sandbox"], input=msgspec.json.encode(job),
                               capture_output=True, env=clean_env(workdir), cwd=workdir, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return ReplayResultMsg(job.request_id, False, f"replay did not finish in {timeout_s:g} s: stopped")
        if p.returncode != 0:
            tail = p.stderr.decode(errors="replace").strip().splitlines()[-3:]
            return ReplayResultMsg(job.request_id, False, f"replay process failed (exit {p.returncode}): {' | '.join(tail)}")
        try:
            return msgspec.json.decode(p.stdout.strip().splitlines()[-1], type=ReplayResultMsg)
        except (msgspec.DecodeError, IndexError) as e:
            return ReplayResultMsg(job.request_id, False, f"replay process answered garbage: {e}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        raise OSError(ctypes.get_errno(), f"{what}: {os.strerror(ctypes.get_errno())}")


def isolate(workdir: str) -> None:
    """New network and mount namespaces; the shared temporary directories read-only, but ``workdir``.

    Read-only binds rather than fresh tmpfs mounts: the replayed binary may live under /tmp and must
    still be found; nothing the replay does can change the host's temporary files."""
    libc = ctypes.CDLL(None, use_errno=True)
    _check(libc.unshare(CLONE_NEWNS | CLONE_NEWNET), "unshare")
    _check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
    for d in PRIVATE_TMP:
        if os.path.isdir(d):
            b = d.encode()
            _check(libc.mount(b, b, None, MS_BIND | MS_REC, None), f"bind {d}")
            _check(libc.mount(None, b, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, None),
                   f"read-only {d}")
    w = workdir.encode()
    _check(libc.mount(w, w, None, MS_BIND, None), "bind workdir")
    _check(libc.mount(None, w, None, MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV, None), "workdir writable")


def drop_privileges(uid: int, gid: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getuid() == 0 or os.geteuid() == 0:
        raise OSError("still root after setresuid")
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    _check(libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0), "dumpable")


def child_main() -> int:
    from kprobe.replay import log as rlog
    from kprobe.replay.inject import parse
    from kprobe.replay.worker import ReplayResultMsg
    from kprobe.replay.worker_whatif import engine_class

    job = msgspec.json.decode(sys.stdin.buffer.read(), type=Job)
    try:
        log = rlog.load(Path(job.session), job.pid)
        injections = [parse(s) for s in job.inject]
        if job.isolate:
            isolate(job.workdir)
        os.chdir(job.workdir)  # before the switch: the path to it need not be traversable by the replay user
        if os.geteuid() == 0:
            drop_privileges(job.uid, job.gid)
        elif os.geteuid() != job.uid:
            raise OSError(f"worker runs as uid {os.geteuid()}, cannot replay as uid {job.uid}")
        engine = engine_class(what_if=not job.strict)  # what-if: calls with outside effects answered EPERM
        res = engine(log, job.argv, injections, strict=job.strict, cpu=job.cpu, env=clean_env(job.workdir),
                     deadline_ms=job.deadline_ms).run()
        out = ReplayResultMsg(
            job.request_id, True, "", res.outcome, res.events_total, res.events_replayed, res.outputs_identical,
            [asdict(d) for d in res.divergences], [asdict(q) for q in res.requests], res.verdict, res.notes,
            res.exit_code, res.wall_s, res.recorded_span_ms, res.replay_span_ms,
        )
    except Exception as e:  # noqa: BLE001 - every failure is the request's answer, never silence
        out = ReplayResultMsg(job.request_id, False, f"{type(e).__name__}: {e}")
    sys.stdout.buffer.write(b"\n" + msgspec.json.encode(out) + b"\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(child_main())
