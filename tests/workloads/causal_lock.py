"""Lock contention across two processes: a forked holder keeps a shared lock for a known time.

The parent (victim) waits for the holder to own the lock, then blocks acquiring it.
Prints "victim_pid holder_pid start_ns end_ns": (end - start) is the measured wait.
"""
import multiprocessing as mp
import os
import sys
import time


def holder(lock, ready_w: int, hold_s: float) -> None:
    with lock:
        os.write(ready_w, b"x")
        time.sleep(hold_s)


if __name__ == "__main__":
    sys.stdin.readline()
    hold_s = float(sys.argv[1]) / 1000
    ctx = mp.get_context("fork")
    lock = ctx.Lock()
    r, w = os.pipe()
    h = ctx.Process(target=holder, args=(lock, w, hold_s))
    h.start()
    os.read(r, 1)
    t0 = time.time_ns()
    lock.acquire()
    t1 = time.time_ns()
    lock.release()
    h.join(10)
    print(os.getpid(), h.pid, t0, t1, flush=True)
