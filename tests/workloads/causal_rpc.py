"""One request/response over loopback TCP between two real processes, no instrumentation.

Role 'server' (argv: server CPU WORK_MS): pins itself to CPU, listens on an
ephemeral port (printed first), serves one request by burning WORK_MS of its own
CPU time, replies, then prints "pid wall_ns cpu_ns" of that work.
Role 'client' (argv: client CPU PORT): pins itself to CPU, sends one request and
waits for the reply; prints "pid start_ns end_ns" around the request.
The ground truth is the processes' own clocks, never the store.
"""
import os
import socket
import sys
import time

sys.stdin.readline()
role, cpu = sys.argv[1], int(sys.argv[2])
os.sched_setaffinity(0, {cpu})
if role == "server":
    work_ns = int(float(sys.argv[3]) * 1e6)
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    print(ls.getsockname()[1], flush=True)
    conn, _ = ls.accept()
    req = b""
    while not req.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            break
        req += chunk
    c0, w0 = time.thread_time_ns(), time.time_ns()
    x = 0
    while time.thread_time_ns() - c0 < work_ns:
        for _ in range(2000):
            x += 1
    wall, used = time.time_ns() - w0, time.thread_time_ns() - c0
    conn.sendall(b"settled\n")
    conn.recv(16)       # wait for the client's close
    print(os.getpid(), wall, used, flush=True)
else:
    s = socket.create_connection(("127.0.0.1", int(sys.argv[3])))
    t0 = time.time_ns()
    s.sendall(b"POST /settle 42.00\n")
    reply = b""
    while not reply.endswith(b"\n"):
        chunk = s.recv(4096)
        if not chunk:
            break
        reply += chunk
    t1 = time.time_ns()
    s.close()
    print(os.getpid(), t0, t1, flush=True)
