"""The default recording answers `why` for processes nobody put on a watch list.

`kprobe record` with its defaults (bounded capture, system-wide) runs no program on
every syscall and none on every send/recv: the call a thread blocked in, and the
socket behind it, come from the sched probe at switch-out. These are the ground-truth
scenarios of the watched suites (a CPU hog, a server preempted behind a TCP hop,
throttled fsync, memcg reclaim by a neighbour) run again under that policy, with
victims that are never watched: the same root cause, culprit and delay must come back.
"""

from __future__ import annotations

import pytest

from tests.causal.conftest import SystemWide
from tests.causal.test_why_faults_kernel import (  # noqa: F401  (fixtures and scenarios reused as they are)
    test_memcg_full_of_a_hogs_dirty_pages_is_memory_pressure_by_the_hog as test_unwatched_memcg_reclaim,
)
from tests.causal.test_why_faults_kernel import (
    test_throttled_fsync_is_disk_io_of_the_writer as test_unwatched_fsync,
)
from tests.causal.test_why_faults_kernel import (
    test_two_hop_client_server_hog_root_cause_is_the_hog as test_unwatched_two_hop,
)
from tests.causal.test_why_faults_kernel import throttled_disk  # noqa: F401
from tests.causal.test_why_kernel import (
    test_pinned_hog_is_root_cause_with_measured_delay as test_unwatched_hog,
)

pytestmark = pytest.mark.kernel

__all__ = ["test_unwatched_hog", "test_unwatched_two_hop", "test_unwatched_fsync", "test_unwatched_memcg_reclaim"]


@pytest.fixture
def capture(system_wide: SystemWide) -> SystemWide:
    programs = {s.program for s in system_wide.session.recorder.probes.status if s.attached}
    # the policy under test: no program on any syscall (not even per-call tracepoints: any syscall tracepoint puts
    # every syscall on the kernel's slow path) or on every send/recv; blocked calls are read at switch-out
    assert not programs & {"kp_sys_enter", "kp_sys_exit", "kp_sock_send_length", "kp_sock_recv_length"}, programs
    assert not {p for p in programs if p.startswith(("kp_enter_", "kp_exit_"))}, programs
    return system_wide
