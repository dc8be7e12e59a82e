"""Fixtures of the agent's pod identity tests: throwaway cgroup trees and a real HTTP kubelet stand-in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.pod_cgroups import Kubelet, cgroup_test_roots


@pytest.fixture
def cgroup_roots(tmp_path) -> Iterator[dict[str, Path]]:
    with cgroup_test_roots(tmp_path.name[-12:]) as roots:
        yield roots


@pytest.fixture
def kubelet() -> Iterator[Kubelet]:
    k = Kubelet()
    yield k
    k.close()
