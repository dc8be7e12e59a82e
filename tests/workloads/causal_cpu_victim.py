"""Victim of CPU preemption: burns a known amount of its own CPU time, reports wall vs CPU.

Prints "pid tid start_ns end_ns cpu_ns": the independent ground truth is that the
thread waited (end - start) - cpu_ns while runnable (pin it and a hog to one CPU).
"""
import sys
import threading
import time

sys.stdin.readline()
work_ns = int(float(sys.argv[1]) * 1e6)
c0 = time.thread_time_ns()
t0 = time.time_ns()
x = 0
while time.thread_time_ns() - c0 < work_ns:
    for _ in range(2000):
        x += 1
t1 = time.time_ns()
cpu = time.thread_time_ns() - c0
print(threading.get_native_id(), threading.get_native_id(), t0, t1, cpu, flush=True)
