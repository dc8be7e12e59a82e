"""`kprobe run -- CMD` runs CMD as the user who asked for it, not as root.

kprobe needs root to load its probes, so it is started with sudo; the command it records has no
reason to inherit that. Under sudo (``SUDO_UID``/``SUDO_GID`` set, kprobe running as root) the child
drops to that user, with the user's supplementary groups and HOME/USER/LOGNAME, before exec;
``--as-root`` keeps root for commands that need it. Without sudo, the command runs as whoever
started kprobe (root started it as root on purpose).
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass


class RunAsError(ValueError):
    """SUDO_UID/SUDO_GID that do not name a user."""


@dataclass(frozen=True)
class RunAs:
    uid: int
    gid: int
    name: str | None
    home: str | None


def invoking_user(environ: dict[str, str] | None = None) -> RunAs | None:
    """The sudo caller to run the command as; None when there is none (not root, or not under sudo, or root)."""
    env = os.environ if environ is None else environ
    if os.geteuid() != 0 or "SUDO_UID" not in env:
        return None
    try:
        uid = int(env["SUDO_UID"])
        gid = int(env.get("SUDO_GID", ""))
    except ValueError:
        raise RunAsError(f"SUDO_UID/SUDO_GID are not numbers ({env.get('SUDO_UID')!r}, {env.get('SUDO_GID')!r}): "
                         "pass --as-root to run the command as root") from None
    if uid == 0:
        return None
    if uid < 0 or gid < 0:
        raise RunAsError("SUDO_UID/SUDO_GID out of range")
    try:
        pw = pwd.getpwuid(uid)
        return RunAs(uid, gid, pw.pw_name, pw.pw_dir)
    except KeyError:
        return RunAs(uid, gid, None, None)


def switch_to(user: RunAs) -> None:
    """In the forked child, before exec: groups, gid, uid (in that order: uid last), then the environment."""
    groups = os.getgrouplist(user.name, user.gid) if user.name else [user.gid]
    os.setgroups(groups)
    os.setresgid(user.gid, user.gid, user.gid)
    os.setresuid(user.uid, user.uid, user.uid)
    if user.name:
        os.environ["USER"] = os.environ["LOGNAME"] = user.name
    if user.home:
        os.environ["HOME"] = user.home
