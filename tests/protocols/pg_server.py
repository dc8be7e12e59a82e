"""A throw-away PostgreSQL from Debian's binaries, with pg_stat_statements, for the decoder tests.

Same recipe as bench/overhead.py (initdb in a temp dir as the ``postgres`` user, TCP on
127.0.0.1, a free port) plus ``pg_stat_statements`` preloaded with planning tracked, which is
the ground truth the PostgreSQL decoder's timings are checked against.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def pg_bindir() -> Path | None:
    dirs = [Path(d) for d in glob.glob("/usr/lib/postgresql/*/bin")
            if all(Path(d, b).exists() for b in ("initdb", "postgres", "pgbench", "psql", "pg_isready"))]
    return max(dirs, key=lambda d: int(d.parent.name)) if dirs else None


def unavailable() -> str | None:
    """Why a PostgreSQL cannot be started here, or None."""
    if pg_bindir() is None:
        return "PostgreSQL server binaries not installed (apt-get install postgresql postgresql-contrib)"
    if os.geteuid() != 0:
        return "starting PostgreSQL as the postgres user needs root"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no postgres user (installed by Debian's postgresql package)"
    return None


class PgServer:
    def __init__(self) -> None:
        bindir = pg_bindir()
        assert bindir is not None
        self.bindir = bindir
        self.tmp = Path(tempfile.mkdtemp(prefix="kprobe-test-pg-", dir="/var/tmp"))
        pg = pwd.getpwnam("postgres")
        os.chown(self.tmp, pg.pw_uid, pg.pw_gid)
        data = self.tmp / "data"
        subprocess.run([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8"],
                       check=True, capture_output=True, user="postgres", cwd=self.tmp, timeout=300)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.log = open(self.tmp / "server.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(bindir / "postgres"), "-D", str(data), "-c", "listen_addresses=127.0.0.1", "-c", f"port={self.port}",
             "-c", f"unix_socket_directories={self.tmp}", "-c", "shared_preload_libraries=pg_stat_statements",
             "-c", "pg_stat_statements.track_planning=on", "-c", "pg_stat_statements.track=all",
             "-c", "fsync=off"],
            user="postgres", cwd=self.tmp, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while subprocess.run(self.client("pg_isready", "-q"), capture_output=True).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not start:\n{(self.tmp / 'server.log').read_text()}")
            time.sleep(0.2)
        self.psql("CREATE EXTENSION pg_stat_statements")

    def client(self, tool: str, *args: str) -> list[str]:
        return [str(self.bindir / tool), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", *args]

    def psql(self, sql: str) -> str:
        return subprocess.run(self.client("psql", "-Atc", sql, "postgres"), check=True, capture_output=True,
                              text=True, timeout=120).stdout

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
