"""Sleep until a ring buffer asks to be drained, another thread pokes, or a timeout.

Why: a thread that wakes on a timer 50 times a second costs ~0.1 ms of CPU per
wake-up on a VM (timer programming, context switches, the GIL), and every
wake-up that lands on a CPU serving requests shows up in that service's p99.
The probes send a wakeup only when a ring is 1/8 full (``kp_submit_to`` in
probes/common.bpf.h), so the drain thread can sleep long while the rings are
quiet and still be woken at once by a burst. Edge-triggered: records below the
mark never make the ring fd readable again and again.
"""

from __future__ import annotations

import os
import select
from collections.abc import Iterable


class RingWaiter:
    def __init__(self, ring_fds: Iterable[int]) -> None:
        self._epoll = select.epoll()
        self._poke = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll.register(self._poke, select.EPOLLIN)
        for fd in ring_fds:
            self._epoll.register(fd, select.EPOLLIN | select.EPOLLET)

    def poke(self) -> None:
        """Wake the waiting thread now (a stop or a flush request); safe from any thread."""
        try:
            os.eventfd_write(self._poke, 1)
        except OSError:  # closed during shutdown: nobody is waiting any more
            pass

    def wait(self, timeout_s: float) -> bool:
        """True when woken by a ring or a poke, False on timeout."""
        try:
            events = self._epoll.poll(timeout_s)
        except InterruptedError:
            return True
        for fd, _ in events:
            if fd == self._poke:
                try:
                    os.eventfd_read(self._poke)
                except BlockingIOError:
                    pass
        return bool(events)

    def close(self) -> None:
        self._epoll.close()
        os.close(self._poke)
