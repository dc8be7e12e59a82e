"""Lock contention between threads of one process: a worker thread holds a threading.Lock for a known time.

Prints "pid holder_tid start_ns end_ns": (end - start) is the main thread's measured wait.
"""
import sys
import threading
import time

sys.stdin.readline()
hold_s = float(sys.argv[1]) / 1000
lock = threading.Lock()
held = threading.Event()
tid: list[int] = []


def holder() -> None:
    with lock:
        tid.append(threading.get_native_id())
        held.set()
        time.sleep(hold_s)


t = threading.Thread(target=holder)
t.start()
held.wait(10)
t0 = time.time_ns()
lock.acquire()
t1 = time.time_ns()
lock.release()
t.join(10)
print(threading.get_native_id(), tid[0], t0, t1, flush=True)
