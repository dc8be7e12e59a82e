"""What kprobe leaves on disk is owner-only, the demo's well-known directory cannot be hijacked, and
`kprobe run` gives the command the invoking user's identity (real recordings on the real kernel)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from kprobe.datadir import UnsafeDataDir, fresh_dir, private_dir
from tests.conftest import is_root

NOBODY = 65534


def _loose(root: Path) -> list[str]:
    """Files or directories under ``root`` that other users could read."""
    bad = []
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = os.lstat(p)
            if not stat.S_ISLNK(st.st_mode) and not stat.S_ISSOCK(st.st_mode) and st.st_mode & 0o077:
                bad.append(f"{p} {st.st_mode & 0o777:o}")
    return bad


def _run(data: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kprobe", "run", "--data", str(data), "--no-otlp", *args],
                          capture_output=True, text=True, timeout=240, env=env)


def test_run_records_into_an_owner_only_directory_and_runs_the_command_as_the_sudo_user(
        tmp_path: Path, probes_built: None) -> None:
    if not is_root():
        pytest.skip("attaching eBPF probes needs root (CI runs as root)")
    data = tmp_path / "data"
    env = {**os.environ, "SUDO_UID": str(NOBODY), "SUDO_GID": str(NOBODY), "SUDO_USER": "nobody"}
    r = _run(data, "--", "sh", "-c", "id -u; id -G; echo $HOME; umask", env=env)
    assert r.returncode == 0, r.stderr
    uid, groups, home, umask = r.stdout.split("\n")[:4]
    assert uid == str(NOBODY) and "0" not in groups.split() and home == "/nonexistent"
    assert umask == f"{os.umask(0o022):04o}"  # the caller's umask, not the recorder's 077
    os.umask(int(umask, 8))
    assert os.stat(data).st_mode & 0o777 == 0o700
    assert not _loose(data), _loose(data)

    root = _run(tmp_path / "d2", "--as-root", "--", "id", "-u", env=env)
    assert root.returncode == 0 and root.stdout.strip() == "0", root.stderr
    plain = _run(tmp_path / "d3", "--", "id", "-u", env={k: v for k, v in os.environ.items() if not k.startswith("SUDO_")})
    assert plain.returncode == 0 and plain.stdout.strip() == "0"  # root without sudo runs it as root


def test_demo_directory_is_created_exclusively_and_someone_elses_is_refused(tmp_path: Path) -> None:
    d = fresh_dir(tmp_path / "kprobe-demo")
    assert os.stat(d).st_mode & 0o777 == 0o700
    (d / "chdb").mkdir()
    assert fresh_dir(d) == d and not (d / "chdb").exists()  # our old demo data: replaced

    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "link-demo"
    link.symlink_to(target)
    with pytest.raises(UnsafeDataDir, match="symbolic link"):
        fresh_dir(link)
    stranger = tmp_path / "stranger-demo"
    stranger.mkdir()
    (stranger / "chdb").mkdir()
    if is_root():
        os.chown(stranger, NOBODY, NOBODY)
        with pytest.raises(UnsafeDataDir, match="belongs to uid"):
            fresh_dir(stranger)
        assert (stranger / "chdb").exists()  # not removed either


def test_demo_cli_refuses_a_planted_directory(tmp_path: Path) -> None:
    planted = tmp_path / "demo"
    planted.symlink_to(tmp_path)
    r = subprocess.run([sys.executable, "-m", "kprobe", "demo", "--data", str(planted)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "symbolic link" in r.stderr, r.stderr


def test_store_directory_is_tightened_to_0700(tmp_path: Path) -> None:
    d = tmp_path / "store"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    private_dir(d)
    assert os.stat(d).st_mode & 0o777 == 0o700
    assert os.stat(private_dir(tmp_path / "new" / "store")).st_mode & 0o777 == 0o700
