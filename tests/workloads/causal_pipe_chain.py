"""Waker chain: the victim blocks reading a pipe that a forked helper writes after doing CPU work.

argv: victim_cpu helper_cpu work_ms. Pin a hog to helper_cpu and the helper's work
gets preempted, so the victim's wait is explained by the hog through the helper.
Prints "victim_pid helper_pid start_ns end_ns helper_wall_ns helper_cpu_ns".
"""
import os
import sys
import time

sys.stdin.readline()
victim_cpu, helper_cpu, work_ns = int(sys.argv[1]), int(sys.argv[2]), int(float(sys.argv[3]) * 1e6)
os.sched_setaffinity(0, {victim_cpu})
r, w = os.pipe()
t0 = time.time_ns()
pid = os.fork()
if pid == 0:
    os.sched_setaffinity(0, {helper_cpu})
    c0, w0 = time.thread_time_ns(), time.time_ns()
    x = 0
    while time.thread_time_ns() - c0 < work_ns:
        for _ in range(2000):
            x += 1
    wall, cpu = time.time_ns() - w0, time.thread_time_ns() - c0
    os.write(w, f"{wall} {cpu}".encode())
    os._exit(0)
data = os.read(r, 100)
t1 = time.time_ns()
os.waitpid(pid, 0)
print(os.getpid(), pid, t0, t1, data.decode(), flush=True)
