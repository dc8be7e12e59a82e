"""Host identity and the wall clock's state, against what the kernel and the files say."""

from __future__ import annotations

import ctypes
import ctypes.util
import socket
from pathlib import Path

from kprobe.agent.host_identity import STA_UNSYNC, HostIdentity, _Timex, ptp_clocks, wall_clock


def test_identity_is_the_machine_and_the_boot() -> None:
    h = HostIdentity.read()
    assert h.hostname == socket.gethostname()
    assert h.boot_id == Path("/proc/sys/kernel/random/boot_id").read_text().strip() and len(h.boot_id) == 36
    mid = next((p.read_text().strip() for p in (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))
                if p.exists() and p.read_text().strip()), "")
    assert h.host_id == mid


def test_the_wall_clock_state_is_the_kernels() -> None:
    """Compared with a second adjtimex read made here: same sync flag, errors the kernel's (µs -> ns)."""
    w = wall_clock()
    tx = _Timex()
    state = ctypes.CDLL(ctypes.util.find_library("c")).adjtimex(ctypes.byref(tx))
    assert w.error == "" and state >= 0
    assert w.synchronised == (not tx.status & STA_UNSYNC)
    assert w.max_error_ns // 1000 in range(tx.maxerror - 1_000_000, tx.maxerror + 1_000_001)   # it grows 500 µs/s
    text = w.describe()
    assert ("NOT synchronised" in text) == (not w.synchronised), text
    assert w.state == "TIME_ERROR" or w.synchronised or state != 5


def test_ptp_clocks_are_listed_with_their_names(tmp_path: Path) -> None:
    for n, name in ((0, "virtio_ptp"), (1, "ice-0000:3b:00.0")):
        d = tmp_path / f"ptp{n}"
        d.mkdir()
        (d / "clock_name").write_text(name + "\n")
    assert ptp_clocks(tmp_path) == ["ptp0 (virtio_ptp)", "ptp1 (ice-0000:3b:00.0)"]
    assert ptp_clocks(tmp_path / "absent") == []
