"""Which machine and which boot a recording comes from, and whether its wall clock can be compared.

Why not the hostname alone: containers, cloned VMs and default images share names ("localhost",
"ubuntu"), and a rebooted host restarts its monotonic clock, so rows of two boots must not be joined
as one timeline. The machine id (systemd's /etc/machine-id, else D-Bus's copy) names the machine; the
kernel's boot id names the boot.

Why the clock state: rows carry CLOCK_REALTIME (converted from the kernel's monotonic clock), and
events of two hosts can only be ordered within the sum of their clocks' errors. The kernel keeps
what NTP/PTP daemons told it (adjtimex: synchronised or not, maximum and estimated error); a host
with a PTP hardware clock lists it under /sys/class/ptp. A host whose clock is not synchronised has
no bound at all, and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import re
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path

MACHINE_ID_FILES = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))
BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
PTP_CLASS = Path("/sys/class/ptp")

# adjtimex(2): return values (clock states) and status bits
CLOCK_STATES = {0: "TIME_OK", 1: "TIME_INS", 2: "TIME_DEL", 3: "TIME_OOP", 4: "TIME_WAIT", 5: "TIME_ERROR"}
STA_UNSYNC = 0x0040
STA_NANO = 0x2000


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    """struct timex (uapi/linux/timex.h), x86_64 layout; zeroed modes: read only."""

    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("constant", ctypes.c_long), ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
                ("time", _Timeval), ("tick", ctypes.c_long), ("ppsfreq", ctypes.c_long),
                ("jitter", ctypes.c_long), ("shift", ctypes.c_int), ("stabil", ctypes.c_long),
                ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long), ("errcnt", ctypes.c_long),
                ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int), ("_pad", ctypes.c_int * 11)]


@dataclass(frozen=True)
class WallClock:
    """The kernel's view of the wall clock's quality (what an NTP or PTP daemon last told it)."""

    state: str                  # adjtimex's clock state; TIME_ERROR: not synchronised
    synchronised: bool          # STA_UNSYNC clear
    max_error_ns: int           # the kernel's bound on the wall clock's error (16 s when nobody set it)
    est_error_ns: int
    offset_ns: int              # the daemon's last measured offset
    tai_offset_s: int
    ptp_clocks: list[str] = field(default_factory=list)   # "ptp0 (virtio_ptp)", ...
    error: str = ""             # why it could not be read

    def to_dict(self) -> dict:
        return {**asdict(self), "describe": self.describe()}

    def describe(self) -> str:
        if self.error:
            return f"wall clock state unknown ({self.error})"
        ptp = f"; PTP clocks: {', '.join(self.ptp_clocks)}" if self.ptp_clocks else "; no PTP clock"
        if not self.synchronised:
            return (f"wall clock NOT synchronised ({self.state}): no bound on its error, so events of this host "
                    f"and another cannot be ordered by time alone{ptp}")
        return (f"wall clock synchronised ({self.state}), max error {self.max_error_ns / 1e6:g} ms, "
                f"estimated {self.est_error_ns / 1e6:g} ms, last offset {self.offset_ns / 1e3:g} µs{ptp}")


def _first_line(paths: tuple[Path, ...]) -> str:
    for p in paths:
        try:
            text = p.read_text().strip()
        except OSError:
            continue
        if text:
            return text
    return ""


def ptp_clocks(root: Path = PTP_CLASS) -> list[str]:
    out = []
    for d in sorted(root.glob("ptp*")):
        try:
            name = (d / "clock_name").read_text().strip()
        except OSError:
            name = "?"
        out.append(f"{d.name} ({name})")
    return out


def wall_clock() -> WallClock:
    """adjtimex(2) with no modes set (a read; needs no privilege) and the PTP clocks present."""
    tx = _Timex()
    # the process's own symbols (libc is loaded): find_library would run ldconfig in a child every call
    libc = ctypes.CDLL(None, use_errno=True)
    state = libc.adjtimex(ctypes.byref(tx))
    if state < 0:
        return WallClock("?", False, 0, 0, 0, 0, ptp_clocks(), f"adjtimex: errno {ctypes.get_errno()}")
    unit = 1 if tx.status & STA_NANO else 1000          # offset in ns with STA_NANO, else µs
    return WallClock(CLOCK_STATES.get(state, str(state)), not tx.status & STA_UNSYNC, tx.maxerror * 1000,
                     tx.esterror * 1000, tx.offset * unit, tx.tai, ptp_clocks())


@dataclass(frozen=True)
class HostIdentity:
    hostname: str
    host_id: str      # the machine id ("" when the host has none: then the name is all there is)
    boot_id: str

    @classmethod
    def read(cls) -> HostIdentity:
        return cls(socket.gethostname(), _first_line(MACHINE_ID_FILES), _first_line((BOOT_ID_FILE,)))

    def key(self, configured: str | None = None) -> str:
        """The ``host`` every row of this agent carries: the configured name when one is given (one agent per
        network namespace or node, a fleet with its own naming), else the hostname. Why not a hash of machine
        and boot id by default: the OTel SDKs and the payload decoder name spans by the hostname, and spans
        join kernel rows by host; the machine id and boot id that tell two machines named alike, or two boots,
        apart are in every heartbeat row (``hosts`` table) and in :meth:`boot_key`."""
        if configured:
            return check_host_name(configured)
        return self.hostname or "host"

    def boot_key(self) -> str:
        """Hostname plus 8 hex digits of a hash of machine id and boot id: unique per machine and boot."""
        digest = hashlib.sha256(f"{self.host_id}:{self.boot_id}".encode()).hexdigest()[:8]
        return f"{self.hostname or 'host'}-{digest}"

    def to_dict(self, clock: WallClock | None = None) -> dict:
        return {**asdict(self), **({"clock": clock.to_dict()} if clock is not None else {})}


_HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,62}")


def check_host_name(name: str) -> str:
    """A configured host name is a row value and a SQL literal in cross-host reads: a short token only."""
    if not _HOST_NAME.fullmatch(name):
        raise ValueError(f"host name {name!r}: 1-63 characters of letters, digits, '.', '_', ':' or '-' "
                         "starting with a letter or digit")
    return name
