"""Waker chain: the victim blocks reading a pipe that a forked helper writes after doing CPU work.

argv: victim_cpu helper_cpu work_ms. Pin a hog to helper_cpu and the helper's work
gets preempted, so the victim's wait is explained by the hog through the helper.
Prints "victim_pid helper_pid start_ns end_ns helper_wall_ns helper_cpu_ns".

The helper moves to the hog's CPU and says so before the victim starts its timed
operation: that move waits behind the hog too, and must not fall inside the
operation unmeasured. The helper's wall time runs from the victim's "go" (sent with
its clock) to its answer, so it counts the wake-up wait behind the hog as well.
"""
import os
import sys
import time

sys.stdin.readline()
victim_cpu, helper_cpu, work_ns = int(sys.argv[1]), int(sys.argv[2]), int(float(sys.argv[3]) * 1e6)
os.sched_setaffinity(0, {victim_cpu})
ready_r, ready_w = os.pipe()
go_r, go_w = os.pipe()
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.sched_setaffinity(0, {helper_cpu})
    os.write(ready_w, b"r")
    w0 = int(os.read(go_r, 100))
    c0 = time.thread_time_ns()
    x = 0
    while time.thread_time_ns() - c0 < work_ns:
        for _ in range(2000):
            x += 1
    wall, cpu = time.time_ns() - w0, time.thread_time_ns() - c0
    os.write(w, f"{wall} {cpu}".encode())
    os._exit(0)
os.read(ready_r, 1)
t0 = time.time_ns()
os.write(go_w, str(t0).encode())
data = os.read(r, 100)
t1 = time.time_ns()
os.waitpid(pid, 0)
print(os.getpid(), pid, t0, t1, data.decode(), flush=True)
