"""End a replay whose running thread stops making progress, instead of hanging.

Why: replay runs one thread at a time (replay/order.py). If that thread blocks in the kernel on
something a parked thread would have done (a lock word, a pipe), or spins in user space waiting
for memory another thread writes without any syscall between (a data race, a lock-free hand-off),
no stop ever comes and the tracer's waitpid never returns. This thread watches a progress counter;
when it has not moved for ``limit_s`` (plus what the running thread needs by the recording) it asks
the engine what is stuck, records it, and kills the tracee, which ends the engine's wait.

It blocks every signal, so it never takes the SIGCHLD of a ptrace stop (the tracer decides
between seccomp notifications and ptrace stops by whether another thread could take it).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

POLL_S = 0.05


class Watchdog:
    """``progress()`` returns something that changes while the replay moves; ``allowance()`` the
    extra seconds the running thread may legitimately need; ``on_stuck(waited_s)`` is called once,
    from this thread, before ``kill()``."""

    def __init__(self, limit_s: float, progress: Callable[[], object], allowance: Callable[[], float],
                 on_stuck: Callable[[float], None], kill: Callable[[], None]):
        self.limit_s = limit_s
        self._progress, self._allowance, self._on_stuck, self._kill = progress, allowance, on_stuck, kill
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.fired = False
        self._thread = threading.Thread(target=self._run, name="kprobe-replay-watchdog", daemon=True)

    def start(self) -> Watchdog:
        self._thread.start()
        self._ready.wait(5)  # its signal mask is in place before the tracer forks
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, set(signal.Signals))
        self._ready.set()
        last, since = object(), time.monotonic()
        while not self._stop.wait(POLL_S):
            now = time.monotonic()
            p = self._progress()
            if p != last:
                last, since = p, now
                continue
            try:
                allowed = self.limit_s + self._allowance()
            except Exception:  # noqa: BLE001 - the engine's state changes under us: try again
                continue
            if now - since > allowed:
                self.fired = True
                try:
                    self._on_stuck(now - since)
                finally:
                    self._kill()
                return


def kill_group(pid: int) -> Callable[[], None]:
    def kill() -> None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return kill
