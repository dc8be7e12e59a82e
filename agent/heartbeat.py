"""The agent's heartbeat: one ``hosts`` row every few seconds saying "this host was recording".

Why: in scale-out mode a chain that crosses hosts needs every host's rows for the window. A host
whose agent was killed, restarted or cut off from Kafka simply has no rows, and an analysis that
cannot tell "nothing happened there" from "nobody was looking" names a wrong cause. The heartbeat
says which hosts were recording when (``ts`` of each beat, ``last_event_ts``: how far its event rows
reached), on which boot, with which clock state (the kernel's adjtimex view, the conversion's own
error and any artificial skew applied for tests), so causal/hosts.py can name the host whose data
is missing. The row is built from state the recorder already keeps: no kernel work, no /proc scan
beyond one adjtimex call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from kprobe.agent.host_identity import HostIdentity, WallClock, wall_clock

AGENT_VERSION = "0.1.0"   # pyproject's version; a row says which agent wrote it
DEFAULT_INTERVAL_MS = 5000


@dataclass
class Heartbeat:
    host: str
    identity: HostIdentity = field(default_factory=HostIdentity.read)
    interval_ms: int = DEFAULT_INTERVAL_MS
    skew_ns: int = 0          # the artificial skew the agent adds to its time conversion (tests), 0 normally
    filter: str = ""          # what this agent records ("netns /run/netns/a", "cgroup ...", "" = everything)
    started_ns: int = field(default_factory=time.time_ns)
    beats: int = 0
    _next_mono_ns: int = 0

    def due(self, now_mono_ns: int) -> bool:
        """True at most once per interval (the first call is due at once: a host announces itself)."""
        if self.interval_ms <= 0 or now_mono_ns < self._next_mono_ns:
            return False
        self._next_mono_ns = now_mono_ns + self.interval_ms * 1_000_000
        return True

    def row(self, now_ns: int, conversion_error_ns: int, last_event_ts: int, written: int, lost: int,
            final: bool = False, clock: WallClock | None = None) -> dict[str, np.ndarray]:
        """One ``hosts`` row (schemas/store_tables.py HOSTS_COLUMNS, in its order) as one-row columns."""
        c = clock if clock is not None else wall_clock()
        self.beats += 1
        ident = self.identity

        def s(v: str) -> np.ndarray:
            return np.array([v], dtype=object)

        return {
            "ts": np.array([now_ns], dtype=np.uint64), "host": s(self.host), "hostname": s(ident.hostname),
            "machine_id": s(ident.host_id), "boot_id": s(ident.boot_id), "agent_version": s(AGENT_VERSION),
            "started_ts": np.array([self.started_ns], dtype=np.uint64),
            "interval_ms": np.array([max(0, self.interval_ms)], dtype=np.uint32),
            "clock_state": s(c.state), "clock_synchronised": np.array([int(c.synchronised)], dtype=np.uint8),
            "clock_max_error_ns": np.array([max(0, c.max_error_ns)], dtype=np.uint64),
            "clock_est_error_ns": np.array([max(0, c.est_error_ns)], dtype=np.uint64),
            "clock_conversion_error_ns": np.array([max(0, conversion_error_ns)], dtype=np.uint64),
            "clock_skew_ns": np.array([self.skew_ns], dtype=np.int64),
            "last_event_ts": np.array([max(0, last_event_ts)], dtype=np.uint64),
            "events_written": np.array([max(0, written)], dtype=np.uint64),
            "events_lost": np.array([max(0, lost)], dtype=np.uint64),
            "filter": s(self.filter), "final": np.array([int(final)], dtype=np.uint8),
        }
