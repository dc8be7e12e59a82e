"""The probes' load-time settings reach every loaded object as read-only data, exactly as configured."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import is_root

pytestmark = pytest.mark.kernel


def test_each_object_holds_the_configured_settings_read_only(probes_built) -> None:
    if not is_root():
        pytest.skip("loading probes needs root (CI runs as root)")
    from kprobe.agent.libbpf import LibbpfError
    from kprobe.agent.probeset import SETTINGS_SECTION, ProbeConfig, ProbeSet
    from kprobe.schemas import layouts as L

    cfg = ProbeConfig(min_offcpu_ns=123_457, min_syscall_ns=7_654_321, watch_pids=(1,), min_block_us=321,
                      probes=("sched", "syscalls", "blockio"))
    ps = ProbeSet(cfg).open()
    try:
        want = ps._settings()
        assert int(want["min_offcpu_ns"][0]) == 123_457 and int(want["filter_on"][0]) == 1
        for name, obj in ps.objects.items():
            got = np.zeros(1, dtype=L.KP_CONFIG)
            m = obj.map(SETTINGS_SECTION)
            assert m.lookup(np.zeros(1, dtype=np.uint32), got), name
            assert got.tobytes() == want.tobytes(), (name, got, want)
            with pytest.raises(LibbpfError):                # frozen at load: the programs may rely on it
                m.update(np.zeros(1, dtype=np.uint32), got)
    finally:
        ps.close()
