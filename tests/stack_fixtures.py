"""The real local stack (deploy/stack.sh) for the tests marked ``servers``, wherever their package puts them.

``stack`` is a session fixture (tests/conftest.py makes it visible everywhere); ``kafka_from_stack`` is
the body of a module fixture that needs only Kafka.

If the script fails the tests fail with its output: a server test that silently skips would
hide exactly the breakage these tests exist to catch. Services that were not running before
the session are stopped afterwards (2 cores: idle JVMs still cost), unless KPROBE_STACK_KEEP=1.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STACK = REPO / "deploy" / "stack.sh"
SERVICES = ("kafka", "neo4j", "clickhouse")
# The first start downloads ~170 MB of jars from Maven Central and may apt-get ClickHouse.
START_TIMEOUT_S = 1200


def cache_dir() -> Path:
    return Path(os.environ.get("KPROBE_STACK_CACHE", REPO / "deploy" / ".cache"))


def stack_script(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """deploy/stack.sh; a Kafka it starts starts empty (KPROBE_STACK_FRESH=1 unless set otherwise): test
    topics have random prefixes, and a broker holding every earlier run's took minutes to start."""
    env = {**os.environ}
    env.setdefault("KPROBE_STACK_FRESH", "1")
    return subprocess.run(
        ["bash", str(STACK), *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        env=env,
    )


def service_running(service: str) -> bool:
    return stack_script("status", service).returncode == 0


def kafka_from_stack() -> Iterator[str]:
    """The Kafka of deploy/stack.sh as a fixture body (started when not running, stopped after unless
    KPROBE_STACK_KEEP=1): yields its bootstrap address."""
    was_running = service_running("kafka")
    result = stack_script("start", "kafka", timeout=1200)
    if result.returncode != 0:
        pytest.fail(f"deploy/stack.sh start kafka failed:\n{result.stdout}\n{result.stderr}")
    try:
        yield read_env(cache_dir() / "stack.env")["KAFKA_BOOTSTRAP"]
    finally:
        if not was_running and os.environ.get("KPROBE_STACK_KEEP") != "1":
            stack_script("stop", "kafka")


def read_env(path: Path) -> dict[str, str]:
    """Parse stack.env (KEY=VALUE lines, # comments) the way a Python caller would."""
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


@pytest.fixture(scope="session")
def stack() -> Iterator[dict[str, str]]:
    """Start Kafka, Neo4j and ClickHouse (no-op for those already up); yield stack.env."""
    already = {s for s in SERVICES if service_running(s)}
    try:
        result = stack_script("start", "all", timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"deploy/stack.sh start all did not finish in {START_TIMEOUT_S}s:\n{exc.stdout}\n{exc.stderr}"
        )
    if result.returncode != 0:
        pytest.fail(
            f"deploy/stack.sh start all failed (exit {result.returncode}):\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
    env_file = cache_dir() / "stack.env"
    assert env_file.is_file(), f"stack.sh did not write {env_file}:\n{result.stdout}"
    try:
        yield read_env(env_file)
    finally:
        if os.environ.get("KPROBE_STACK_KEEP") != "1":
            for service in SERVICES:
                if service not in already:
                    stack_script("stop", service)
