"""The replay worker's configuration and the checks every control-topic request passes first.

Anyone who can write to the control topic can send a request, so a request names nothing the
worker's operator has not allowed: the binary to replay must be one of ``binaries`` (compared after
resolving symlinks), the recording must lie under one of ``data_roots`` (after resolving, so a
symlink or ``..`` cannot leave it), the session is a plain name (no ``/``, no ``..``), and every
number is inside a sane range. Empty allowlists refuse everything: a worker with no configuration
replays nothing.

Configuration is a TOML or JSON file (``--config``)::

    binaries = ["/opt/ledger/bin/settlement-svc"]
    data_roots = ["/var/lib/kprobe"]
    work_root = "/var/lib/kprobe-replay"   # one private directory per replay, owned by run_as_user
    run_as_user = "kprobe-replay"          # never root: the replayed program runs as this user
    timeout_s = 300
    isolate = true                         # own network and mount namespaces (no network, private /tmp)
    [kafka]                                # passed to librdkafka as is (TLS / SASL only)
    "security.protocol" = "SASL_SSL"
    "sasl.mechanism" = "SCRAM-SHA-512"
    "sasl.username" = "replay"
    "sasl.password" = "..."
    "ssl.ca.location" = "/etc/kprobe/ca.pem"
"""

from __future__ import annotations

import json
import os
import pwd
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import msgspec

SESSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
PID_MAX = 1 << 22  # the kernel's limit on pid_max
MAX_ARGS, MAX_ARG_BYTES, MAX_INJECT = 256, 4096, 64
MAX_DEADLINE_MS = 3_600_000.0
# librdkafka settings a config may pass: transport security and identity, nothing that changes
# how offsets are committed or which group the worker is in.
KAFKA_PASSTHROUGH = ("security.protocol", "ssl.", "sasl.", "client.id", "socket.", "ssl_engine")


class ConfigError(ValueError):
    """The worker's own configuration is unusable (the worker does not start)."""


class RequestRefused(ValueError):
    """A request the configuration does not allow (answered with ok: false)."""


class WorkerConfig(msgspec.Struct, forbid_unknown_fields=True):
    binaries: list[str] = []
    data_roots: list[str] = []
    work_root: str = "/var/lib/kprobe-replay"
    run_as_user: str | int = "nobody"
    run_as_group: str | int | None = None
    timeout_s: float = 300.0
    isolate: bool = True
    kafka: dict[str, str] = {}

    def check(self) -> WorkerConfig:
        for b in self.binaries:
            if not os.path.isabs(b):
                raise ConfigError(f"binaries: {b!r} is not an absolute path")
        for r in self.data_roots:
            if not os.path.isabs(r):
                raise ConfigError(f"data_roots: {r!r} is not an absolute path")
        if not os.path.isabs(self.work_root):
            raise ConfigError(f"work_root: {self.work_root!r} is not an absolute path")
        if not 0 < self.timeout_s <= 86400:
            raise ConfigError(f"timeout_s: {self.timeout_s} is not in (0, 86400]")
        for k in self.kafka:
            if not k.startswith(KAFKA_PASSTHROUGH):
                raise ConfigError(f"kafka: {k!r} is not a TLS/SASL/identity setting (allowed: {', '.join(KAFKA_PASSTHROUGH)})")
        uid, _ = self.identity()
        if uid == 0:
            raise ConfigError("run_as_user is root: replays run unprivileged")
        if os.geteuid() != 0:  # e.g. a pod with runAsUser: it can neither switch users nor make namespaces
            if uid != os.geteuid():
                raise ConfigError(f"the worker runs as uid {os.geteuid()}, not root: it can only replay as itself "
                                  f"(set run_as_user = {os.geteuid()})")
            if self.isolate:
                raise ConfigError("isolate = true needs a worker started as root (namespaces); in a pod, set "
                                  "isolate = false and isolate the pod instead (NetworkPolicy, read-only root)")
        return self

    def identity(self) -> tuple[int, int]:
        """(uid, gid) replays run as."""
        try:
            if isinstance(self.run_as_user, int):
                uid, gid = self.run_as_user, self.run_as_user
                try:
                    gid = pwd.getpwuid(uid).pw_gid
                except KeyError:
                    pass
            else:
                pw = pwd.getpwnam(self.run_as_user)
                uid, gid = pw.pw_uid, pw.pw_gid
            if self.run_as_group is not None:
                import grp

                gid = self.run_as_group if isinstance(self.run_as_group, int) else grp.getgrnam(self.run_as_group).gr_gid
        except KeyError as e:
            raise ConfigError(f"run_as_user/run_as_group: no such user or group ({e})") from None
        return uid, gid


def load_config(path: Path | None) -> WorkerConfig:
    if path is None:
        return WorkerConfig().check()
    raw = path.read_bytes()
    try:
        data = tomllib.loads(raw.decode()) if path.suffix == ".toml" else json.loads(raw)
        return msgspec.convert(data, WorkerConfig).check()
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError, msgspec.ValidationError) as e:
        raise ConfigError(f"{path}: {e}") from None


def _resolved_under(path: Path, roots: list[Path]) -> bool:
    return any(path == r or path.is_relative_to(r) for r in roots)


@dataclass(frozen=True)
class CheckedRequest:
    """A request with every path resolved and every value inside its range."""

    request_id: str
    session: Path
    pid: int | None
    argv: list[str]
    inject: list[str]
    deadline_ms: float | None
    what_if: bool
    cpu: int


def check_request(req, cfg: WorkerConfig) -> CheckedRequest:  # req: worker.ReplayRequest
    """Resolve and validate; RequestRefused says what is not allowed."""
    if not REQUEST_ID.fullmatch(req.request_id):
        raise RequestRefused("request_id must be 1-128 characters of [A-Za-z0-9._:@/+=-]")
    if not req.command or len(req.command) > MAX_ARGS:
        raise RequestRefused(f"command must have 1 to {MAX_ARGS} elements")
    for a in req.command:
        if "\0" in a or len(a.encode()) > MAX_ARG_BYTES:
            raise RequestRefused(f"command arguments must be NUL-free and at most {MAX_ARG_BYTES} bytes")
    exe = req.command[0]
    if not os.path.isabs(exe):
        raise RequestRefused(f"command[0] must be an absolute path (no PATH lookup): {exe!r}")
    allowed = {os.path.realpath(b) for b in cfg.binaries}
    real_exe = os.path.realpath(exe)
    if real_exe not in allowed:
        raise RequestRefused(f"binary {exe!r} is not in the worker's allowlist (config: binaries)")
    if len(req.inject) > MAX_INJECT or any(len(s) > 256 for s in req.inject):
        raise RequestRefused(f"at most {MAX_INJECT} injections of at most 256 characters")
    if req.deadline_ms is not None and not 0 < req.deadline_ms <= MAX_DEADLINE_MS:
        raise RequestRefused(f"deadline_ms must be in (0, {MAX_DEADLINE_MS:.0f}]")
    if req.cpu not in os.sched_getaffinity(0):
        raise RequestRefused(f"cpu {req.cpu} is not one this worker may run on")
    if req.pid is not None and not 0 < req.pid < PID_MAX:
        raise RequestRefused(f"pid {req.pid} is out of range")
    roots = [Path(os.path.realpath(r)) for r in cfg.data_roots]
    if not os.path.isabs(req.data):
        raise RequestRefused(f"data {req.data!r} must be an absolute path")
    data = Path(os.path.realpath(req.data))
    if not roots or not _resolved_under(data, roots):
        raise RequestRefused(f"data {req.data!r} is not under the worker's data roots (config: data_roots)")
    pid = req.pid
    if req.incident:
        name, sep, pid_s = req.incident.partition(":")
        if not SESSION_NAME.fullmatch(name) or ".." in name:
            raise RequestRefused(f"incident session {name!r} must be a plain name ([A-Za-z0-9._-], no '..', no '/')")
        if sep:
            if not pid_s.isdigit() or not 0 < int(pid_s) < PID_MAX:
                raise RequestRefused(f"incident pid {pid_s!r} is not a pid")
            pid = int(pid_s)
        session = Path(os.path.realpath(data / "replay" / name))
        if not _resolved_under(session, roots):
            raise RequestRefused(f"session {name!r} resolves outside the data roots")
    elif req.pid is not None:
        from kprobe.replay import log as rlog

        session = Path(os.path.realpath(rlog.find_session(data, req.pid)))
        if not _resolved_under(session, roots):
            raise RequestRefused("the recording resolves outside the data roots")
    else:
        raise RequestRefused("request needs pid or incident")
    return CheckedRequest(req.request_id, session, pid, list(req.command), list(req.inject),
                          req.deadline_ms, req.what_if, req.cpu)
