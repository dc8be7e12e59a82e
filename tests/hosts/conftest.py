"""Kafka and ClickHouse of deploy/stack.sh for the many-hosts pipeline test (started when not running, stopped
after unless KPROBE_STACK_KEEP=1; a failing start fails the test with the script's output)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.stack_fixtures import cache_dir, read_env, service_running, stack_script


@pytest.fixture(scope="session")
def kafka_clickhouse() -> Iterator[dict[str, str]]:
    started = []
    for service in ("kafka", "clickhouse"):
        if not service_running(service):
            started.append(service)
        result = stack_script("start", service, timeout=1200)
        if result.returncode != 0:
            pytest.fail(f"deploy/stack.sh start {service} failed:\n{result.stdout}\n{result.stderr}")
    try:
        yield read_env(cache_dir() / "stack.env")
    finally:
        if os.environ.get("KPROBE_STACK_KEEP") != "1":
            for service in started:
                stack_script("stop", service)
