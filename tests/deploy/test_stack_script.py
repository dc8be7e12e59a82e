"""deploy/stack.sh contract: idempotent start, truthful status, loopback-only listeners."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.servers

STACK = Path(__file__).resolve().parents[2] / "deploy" / "stack.sh"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(STACK), *args], capture_output=True, text=True, timeout=120)


def test_start_when_running_is_a_noop(stack: dict[str, str]) -> None:
    result = _run("start", "all")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("already running") == 3, result.stdout


def test_status_reports_running(stack: dict[str, str]) -> None:
    result = _run("status", "all")
    assert result.returncode == 0, result.stdout + result.stderr
    for service in ("kafka", "neo4j", "clickhouse"):
        assert f"{service}: running" in result.stdout


def test_unknown_service_is_rejected() -> None:
    result = _run("start", "postgres")
    assert result.returncode != 0
    assert "unknown service" in result.stderr


def test_listeners_are_loopback_only(stack: dict[str, str]) -> None:
    ports = {
        int(stack["KAFKA_BOOTSTRAP"].rsplit(":", 1)[1]),
        int(stack["NEO4J_URI"].rsplit(":", 1)[1]),
        int(stack["CLICKHOUSE_PORT"]),
        int(stack["CLICKHOUSE_HTTP_PORT"]),
    }
    listing = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, check=True).stdout
    seen = set()
    for line in listing.splitlines():
        local = line.split()[3]
        host, _, port = local.rpartition(":")
        if int(port) in ports:
            seen.add(int(port))
            assert host in ("127.0.0.1", "[::ffff:127.0.0.1]"), f"port {port} listens on {host}"
    assert seen == ports
