"""Data directories kprobe creates or reuses: owner-only, never through a link, never someone else's.

The data directory holds everything recorded (kernel events, spans, replay logs with payload bytes),
so it is 0700 and what kprobe writes into it 0600 (the recording commands run with umask 077). A
well-known path in a world-writable directory (the demo's ``/tmp/kprobe-demo``) is the classic
trap: another user creates it first, or a symlink there, and root then writes the recording into a
directory that user controls. So such a directory is created exclusively (``mkdir`` fails if
anything is there, mkdtemp-style), and an existing one is used only when it is a real directory
owned by us.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path


class UnsafeDataDir(RuntimeError):
    """A data directory kprobe will not use (someone else's, a symlink, not a directory)."""


def _check_owned_dir(path: Path) -> os.stat_result:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeDataDir(f"{path} is a symbolic link: refusing to record through it")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeDataDir(f"{path} exists and is not a directory")
    if st.st_uid != os.geteuid():
        raise UnsafeDataDir(f"{path} belongs to uid {st.st_uid}, not to us (uid {os.geteuid()}): "
                            "someone else could read or change the recording; choose another --data")
    return st


def private_dir(path: Path) -> Path:
    """``path`` as an owner-only directory: created 0700 (parents as usual), or an existing one of ours
    tightened to 0700. Someone else's existing directory is left as it is (a reader opening a store it
    may read); an operator's symlink (``/var/lib/kprobe`` -> a data disk) is followed: well-known names
    in shared directories go through :func:`fresh_dir` instead."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeDataDir(f"{path} exists and is not a directory")
    if st.st_uid == os.geteuid() and st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def fresh_dir(path: Path, replace_if: str = "chdb") -> Path:
    """A new, empty, owner-only directory at ``path``. An existing one is removed first only if it is
    ours, a real directory, and empty or a kprobe data directory (holds ``replace_if``)."""
    if os.path.lexists(path):
        _check_owned_dir(path)
        if not (path / replace_if).exists() and any(path.iterdir()):
            raise UnsafeDataDir(f"{path} is not empty and not a kprobe data directory; choose another --data")
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(path, 0o700)  # exclusive: if anything appeared meanwhile, fail rather than use it
    except FileExistsError:
        raise UnsafeDataDir(f"{path} appeared while it was being created: someone else is using the name") from None
    _check_owned_dir(path)
    return path
