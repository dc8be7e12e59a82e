"""The replay worker runs only what its operator allowed, unprivileged, isolated, and answers every
message, however broken, with a result (real recordings, real replay engine, real namespaces)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from kprobe.replay import worker
from kprobe.replay.worker_config import ConfigError, WorkerConfig, load_config
from tests.conftest import is_root

WORKLOADS = Path(__file__).resolve().parents[1] / "workloads" / "replay"
NOBODY = 65534


def _config(tmp_path: Path, binaries: list[str], **kw: object) -> WorkerConfig:
    return WorkerConfig(binaries=binaries, data_roots=[str(tmp_path / "data")], work_root=str(tmp_path / "work"),
                        run_as_user=NOBODY, **kw).check()  # type: ignore[arg-type]


def _req(**kw: object) -> bytes:
    base = {"request_id": "r-1", "data": "/nonexistent", "command": ["/bin/true"], "incident": "s1"}
    return json.dumps({**base, **kw}).encode()


@pytest.fixture
def fake_session(tmp_path: Path) -> Path:
    """A session directory holding what a broken or hostile recording could hold."""
    s = tmp_path / "data" / "replay" / "s1"
    s.mkdir(parents=True)
    return s


@pytest.mark.parametrize("overrides, why", [
    ({"command": ["/bin/sh", "-c", "touch {mark}"]}, "allowlist"),
    ({"command": ["sh", "-c", "touch {mark}"]}, "absolute"),
    ({"data": "/etc"}, "data roots"),
    ({"data": "{data}/../.."}, "data roots"),
    ({"incident": "../../etc"}, "plain name"),
    ({"incident": "/etc/passwd"}, "plain name"),
    ({"incident": "s1:-5"}, "not a pid"),
    ({"incident": "s1:99999999999999999999"}, "not a pid"),
    ({"cpu": 4096}, "cpu"),
    ({"deadline_ms": -1}, "deadline_ms"),
    ({"deadline_ms": 1e300}, "deadline_ms"),
    ({"request_id": "a\nb"}, "request_id"),
    ({"command": []}, "command"),
    ({"inject": ["x"] * 1000}, "injections"),
])
def test_requests_outside_the_configuration_are_refused_and_run_nothing(tmp_path: Path, fake_session: Path,
                                                                      overrides: dict, why: str) -> None:
    mark = tmp_path / "MARK"
    data = str(tmp_path / "data")
    fields = {k: (v.format(mark=mark, data=data) if isinstance(v, str) else
                  [a.format(mark=mark) for a in v] if isinstance(v, list) and v and isinstance(v[0], str) else v)
              for k, v in {"data": data, "command": ["/bin/true"], **overrides}.items()}
    res = worker.handle(_req(**fields), b"k", _config(tmp_path, ["/bin/true"]))
    assert not res.ok and why in res.error, res.error
    assert not mark.exists()


def test_a_config_with_no_allowlist_refuses_everything(tmp_path: Path, fake_session: Path) -> None:
    res = worker.handle(_req(data=str(tmp_path / "data")), b"k", WorkerConfig(run_as_user=NOBODY).check())
    assert not res.ok and "allowlist" in res.error


@pytest.mark.parametrize("meta, rsys", [
    (b"{not json", b""),
    (b'{"start_ns": "soon", "cpu": [1, 2]}', b"\x00" * 7),
    (b"[]", os.urandom(4096)),
    (b'{"a": 1e999999}', b"\xff" * 100_000),
])
def test_poisoned_recordings_give_an_error_result(tmp_path: Path, fake_session: Path, meta: bytes, rsys: bytes) -> None:
    from kprobe.replay import log as rlog

    (fake_session / rlog.META_FILE).write_bytes(meta)
    (fake_session / rlog.RSYS_FILE).write_bytes(rsys)
    (fake_session / rlog.RDATA_FILE).write_bytes(os.urandom(333))
    res = worker.handle(_req(data=str(tmp_path / "data"), incident="s1:42"), b"k", _config(tmp_path, ["/bin/true"]))
    assert not res.ok and res.error, res
    assert not list((tmp_path / "work").glob("*"))  # the private directory went with the replay


def test_undecodable_and_absurd_messages_answer_with_the_key(tmp_path: Path) -> None:
    cfg = _config(tmp_path, ["/bin/true"])
    for raw in (b"{not json", b"\xff\xfe", b"[]", b'{"request_id": 5}', json.dumps({"request_id": "x" * 10_000,
                "data": "/", "command": ["/bin/true"]}).encode()):
        res = worker.handle(raw, b"key-1", cfg)
        assert not res.ok and len(res.request_id) <= 128


def test_config_refuses_root_relative_paths_and_non_tls_kafka_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="root"):
        WorkerConfig(run_as_user=0).check()
    with pytest.raises(ConfigError, match="absolute"):
        WorkerConfig(binaries=["bin/x"], run_as_user=NOBODY).check()
    with pytest.raises(ConfigError, match="TLS/SASL"):
        WorkerConfig(run_as_user=NOBODY, kafka={"enable.auto.commit": "true"}).check()
    p = tmp_path / "w.toml"
    p.write_text('binaries = ["/bin/true"]\ndata_roots = ["/var/lib/kprobe"]\nrun_as_user = "nobody"\n'
                 '[kafka]\n"security.protocol" = "SASL_SSL"\n"sasl.mechanism" = "PLAIN"\n')
    cfg = load_config(p)
    assert worker.kafka_settings("b:1", cfg) == {"bootstrap.servers": "b:1", "security.protocol": "SASL_SSL",
                                                 "sasl.mechanism": "PLAIN"}


SANDBOX_PROBE = """
import os, socket, sys, json
from kprobe.replay.worker_sandbox import isolate, drop_privileges, clean_env
isolate({work!r}); os.chdir({work!r}); drop_privileges({uid}, {uid})
out = {{"uid": os.getuid(), "euid": os.geteuid(), "groups": os.getgroups()}}
open("scratch", "w").write("ok")
try:
    open("/tmp/kprobe-sandbox-new", "w"); out["write_tmp"] = "ok"
except OSError as e:
    out["write_tmp"] = e.errno
s = socket.socket()
s.settimeout(2)
try:
    s.connect(("127.0.0.1", {port})); out["connect"] = "ok"
except OSError as e:
    out["connect"] = e.errno
try:
    open({hostfile!r}, "w"); out["write_host"] = "ok"
except OSError as e:
    out["write_host"] = e.errno
try:
    os.setuid(0); out["regain_root"] = "ok"
except OSError as e:
    out["regain_root"] = e.errno
print(json.dumps(out))
"""


def test_sandbox_is_unprivileged_offline_and_has_a_private_tmp(tmp_path: Path) -> None:
    if not is_root():
        pytest.skip("namespaces and the uid switch need root (CI runs as root)")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    hostfile = tmp_path / "owned-by-root"
    work = tmp_path / "work"
    work.mkdir()
    os.chown(work, NOBODY, NOBODY)
    try:
        code = SANDBOX_PROBE.format(uid=NOBODY, port=listener.getsockname()[1], hostfile=str(hostfile), work=str(work))
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout.strip().splitlines()[-1])
    finally:
        listener.close()
    assert out["uid"] == out["euid"] == NOBODY and out["groups"] == []
    assert out["connect"] != "ok"  # the host's loopback is not reachable from the replay's network namespace
    assert out["write_tmp"] != "ok" and not Path("/tmp/kprobe-sandbox-new").exists()  # /tmp is read-only in it
    assert (work / "scratch").read_text() == "ok"  # its private directory is writable
    assert out["write_host"] != "ok" and out["regain_root"] != "ok"
    assert not hostfile.exists()


def _record_two_threads(tmp_path: Path, bindir: Path) -> tuple[Path, Path, int]:
    from kprobe.replay.record import ReplayRecorder

    exe = bindir / "two_threads"
    subprocess.run(["gcc", "-O2", "-pthread", "-o", str(exe), str(WORKLOADS / "two_threads.c")], check=True)
    out = tmp_path / "out.log"
    rec = ReplayRecorder(tmp_path / "data" / "replay" / "incident-1")
    try:
        p = rec.start([str(exe), str(out)])
        assert p.wait() == 0
    finally:
        rec.stop()
    out.unlink()
    return exe, out, p.pid


def test_allowed_request_replays_identically_as_an_unprivileged_user(tmp_path: Path, probes_built: None) -> None:
    if not is_root():
        pytest.skip("attaching eBPF probes, namespaces and the uid switch need root (CI runs as root)")
    import shutil
    import tempfile

    bindir = Path(tempfile.mkdtemp(prefix="kprobe-replay-bin-", dir="/var/tmp"))  # pytest's tmp is 0700: the
    os.chmod(bindir, 0o755)                                                       # replay user could not exec
    try:
        exe, out, pid = _record_two_threads(tmp_path, bindir)
        _replay_as_nobody(tmp_path, exe, out, pid)
    finally:
        shutil.rmtree(bindir)


def _replay_as_nobody(tmp_path: Path, exe: Path, out: Path, pid: int) -> None:
    cfg = _config(tmp_path, [str(exe)])
    good = msgspec.json.encode(worker.ReplayRequest("r-good", str(tmp_path / "data"), [str(exe), str(out)],
                                                    incident=f"incident-1:{pid}"))
    res = worker.handle(good, b"r-good", cfg)
    assert res.ok and res.outcome == "identical" and res.outputs_identical, (res.error, res.divergences, res.notes)
    assert res.events_replayed == res.events_total > 0
    assert not out.exists()  # the replay wrote nothing where the recording wrote
    assert not list((tmp_path / "work").glob("*"))


def test_what_if_replay_refuses_calls_with_outside_effects(tmp_path: Path, probes_built: None) -> None:
    """Under an injected delay the program takes a branch the recording never saw (create a file,
    connect): the plain engine would run both for real; the worker's what-if engine answers EPERM."""
    if not is_root():
        pytest.skip("attaching eBPF probes and ptrace need root (CI runs as root)")
    from kprobe.replay import log as rlog
    from kprobe.replay.engine import ReplayEngine
    from kprobe.replay.inject import parse
    from kprobe.replay.record import ReplayRecorder
    from kprobe.replay.worker_whatif import SafeWhatIfEngine

    exe = tmp_path / "whatif_branch"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(WORKLOADS / "whatif_branch.c")], check=True)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    marker = tmp_path / "MARKER"
    argv = [str(exe), str(tmp_path / "data.bin"), str(marker), str(port)]
    rec = ReplayRecorder(tmp_path / "data" / "replay" / "s")
    try:
        p = rec.start(argv)
        assert p.wait() == 0
    finally:
        rec.stop()
    assert not marker.exists()  # recorded on the fast path
    log = rlog.load(tmp_path / "data" / "replay" / "s", p.pid)
    fsync_fd = next(e.args[0] & 0xFFFFFFFF for e in log.events if e.nr == 74)
    delay = [parse(f"delay every fsync to fd {fsync_fd} by 500 ms")]

    def accepted() -> bool:
        try:
            listener.accept()[0].close()
            return True
        except TimeoutError:
            return False

    try:
        safe = SafeWhatIfEngine(log, argv, list(delay), strict=False).run()
        assert not marker.exists() and not accepted(), safe.notes
        assert any("open for writing" in n for n in safe.notes) and any("network" in n for n in safe.notes), safe.notes
        # the same what-if on the plain engine does both for real: the test can tell the difference
        ReplayEngine(log, argv, [parse(f"delay every fsync to fd {fsync_fd} by 500 ms")], strict=False).run()
        assert marker.exists() and accepted()
    finally:
        listener.close()
