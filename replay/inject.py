"""Timing injections for what-if replays, parsed from short English specs.

    delay the 3rd write to fd 7 by 388 ms      one call (N counts calls of that syscall on that fd)
    delay every fsync on /var/ledger/* by 50ms  every matching call (fd resolved to its path at replay)
    delay every write to fd 5 by 2 ms
    remove the recorded kernel delay at event 1234   that call completes instantly in virtual time

Delays act on the replay's virtual clock (what the replayed program reads and what the request
latencies are measured in), not on wall time: a 388 ms what-if costs no real 388 ms, and the result
is the same on every run.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ptrace.syscall.names import SYSCALL_NAMES

if TYPE_CHECKING:
    from kprobe.replay.log import Event
    from kprobe.replay.session import Session

_NR = {name: nr for nr, name in SYSCALL_NAMES.items()}
_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_DELAY = re.compile(
    r"^delay\s+(?:the\s+(?P<nth>\d+)(?:st|nd|rd|th)?\s+|(?P<every>every|all)\s+)?(?P<sys>\w+?)s?"
    r"\s+(?:to|on|of)\s+(?:fd\s+(?P<fd>\d+)|(?P<path>\S+))\s+by\s+(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>ns|us|µs|ms|s)$",
    re.I,
)
_REMOVE = re.compile(r"^remove\s+(?:the\s+)?(?:recorded\s+)?(?:kernel\s+)?delay\s+at\s+event\s+(?P<ev>\d+)$", re.I)


class InjectError(ValueError):
    """A spec that does not parse; the message shows the accepted forms."""


@dataclass
class Injection:
    spec: str
    nr: int = -1
    fd: int | None = None
    path: str | None = None
    nth: int | None = None          # None: every matching call
    delay: int = 0
    remove_event: int | None = None
    _seen: int = field(default=0, init=False)

    def _matches(self, e: Event, session: Session) -> bool:
        if e.nr != self.nr:
            return False
        fd = e.args[0] & 0xFFFFFFFF
        if self.fd is not None and fd != self.fd:
            return False
        return not (self.path is not None and not fnmatch.fnmatch(session.fd_path.get(fd, ""), self.path))

    def delay_ns(self, e: Event, session: Session) -> int:
        if self.remove_event is not None or not self._matches(e, session):
            return 0
        self._seen += 1
        return self.delay if self.nth is None or self._seen == self.nth else 0

    def removes(self, e: Event) -> bool:
        return self.remove_event is not None and e.index == self.remove_event


def parse(spec: str) -> Injection:
    s = " ".join(spec.split())
    m = _REMOVE.match(s)
    if m:
        return Injection(spec, remove_event=int(m["ev"]))
    m = _DELAY.match(s)
    if not m:
        raise InjectError(f"cannot parse injection {spec!r}; use e.g. 'delay the 3rd write to fd 7 by 388 ms', "
                          "'delay every fsync on /var/ledger/* by 50 ms', 'remove the recorded kernel delay at "
                          "event 1234'")
    name = m["sys"].lower()
    if name not in _NR:
        raise InjectError(f"unknown syscall {name!r} in {spec!r}")
    return Injection(
        spec, nr=_NR[name], fd=int(m["fd"]) if m["fd"] else None, path=m["path"],
        nth=int(m["nth"]) if m["nth"] else (None if m["every"] else 1),
        delay=int(float(m["num"]) * _UNITS[m["unit"].lower()]),
    )
