"""`kprobe sql` is read-only by default: the real CLI against a real chDB store."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from kprobe.query.sql import SqlPolicy, SqlRefused


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kprobe.sinks.chdb_store import ChdbStore

    d = tmp_path_factory.mktemp("store")
    ChdbStore(d).close()
    return d


def _sql(data: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kprobe", "sql", "--data", str(data), "--format", "CSV", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_reads_work(data: Path) -> None:
    r = _sql(data, "SELECT count() FROM offcpu")
    assert r.returncode == 0 and r.stdout.strip() == "0", r.stderr


@pytest.mark.parametrize("query", [
    "INSERT INTO offcpu (ts) VALUES (1)",
    "INSERT INTO offcpu (ts) SELECT 1",
    "DROP TABLE offcpu",
    "ALTER TABLE offcpu DELETE WHERE 1",
    "SELECT * FROM file('/etc/hostname', 'LineAsString')",
    "SELECT * FROM url('http://127.0.0.1:9/x', 'CSV', 'a String')",
    "SELECT * FROM executable('id', 'TSV', 'a String')",
    "SELECT file('/etc/hostname')",  # the plain function: ClickHouse's readonly lets it read any file
    "SELECT 1 SETTINGS readonly = 0",
    "SELECT 1 --",
])
def test_writes_files_network_and_programs_are_refused(data: Path, query: str) -> None:
    r = _sql(data, query)
    if query == "SELECT 1 --":  # a trailing comment does not swallow the settings: still read-only and runs
        assert r.returncode == 0 and r.stdout.strip() == "1", r.stderr
        return
    assert r.returncode != 0, r.stdout
    assert "read-only" in r.stderr or "readonly" in r.stderr.lower(), r.stderr


def test_a_query_with_its_own_settings_runs_read_only(data: Path) -> None:
    """Nothing is appended to the text: a statement with a SETTINGS clause (UNION ALL too) runs as written."""
    r = _sql(data, "SELECT count() FROM offcpu UNION ALL SELECT getSetting('readonly') SETTINGS max_threads = 1")
    assert r.returncode == 0 and sorted(r.stdout.split()) == ["0", "1"], r.stderr
    r = _sql(data, "--timeout", "7", "SELECT getSetting('max_execution_time')")
    assert r.returncode == 0 and r.stdout.strip() == "7", r.stderr


def test_file_writes_are_refused_and_nothing_is_written(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    for q in (f"SELECT 1 INTO OUTFILE '{out}'", f"INSERT INTO FUNCTION file('{out}', 'CSV') SELECT 1",
              f"SELECT 1 INTO outfile '{out}' FORMAT CSV"):
        r = _sql(data, q)
        assert r.returncode != 0 and "--write" in r.stderr, (q, r.stderr)
        assert not out.exists(), q


def test_write_opt_in_runs_the_statement(data: Path) -> None:
    r = _sql(data, "--write", "CREATE TABLE scratch (a UInt8) ENGINE = Memory")
    assert r.returncode == 0, r.stderr


def test_a_long_query_is_stopped_by_the_timeout(data: Path) -> None:
    t0 = time.monotonic()
    r = _sql(data, "--timeout", "1", "SELECT count() FROM numbers(100000000000)")
    assert r.returncode != 0 and "Timeout" in r.stderr, r.stderr
    assert time.monotonic() - t0 < 30


def test_policy_refuses_empty_and_nonpositive_timeouts() -> None:
    with pytest.raises(SqlRefused):
        SqlPolicy().apply("  ; ")
    with pytest.raises(SqlRefused):
        SqlPolicy(timeout_s=0).apply("SELECT 1")
    assert SqlPolicy(write=True).apply("INSERT INTO t VALUES (1);") == "INSERT INTO t VALUES (1)"
