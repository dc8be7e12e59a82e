"""client -> middle -> ledger over TCP, one role per process (each in its own network namespace).

ledger ADDR PORT WORK_MS: answers each request after WORK_MS of CPU (the ledger's own work);
middle ADDR PORT LEDGER_ADDR LEDGER_PORT: forwards each request to the ledger, answers with its reply;
client MIDDLE_ADDR MIDDLE_PORT N GAP_MS: N requests GAP_MS apart on one connection, then prints one JSON
line per request: its number and the UTC ns it was sent and answered (the ground truth of the windows).
Requests and replies are newline-terminated.
"""

from __future__ import annotations

import json
import socket
import sys
import time


def _lines(conn: socket.socket):
    buf = b""
    while True:
        data = conn.recv(4096)
        if not data:
            return
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line


def _listen(addr: str, port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(4)
    print("listening", flush=True)
    return s


def ledger(addr: str, port: str, work_ms: str) -> None:
    s = _listen(addr, int(port))
    conn, _ = s.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for line in _lines(conn):
        end = time.thread_time() + float(work_ms) / 1000      # CPU time: waiting for a CPU does not count
        while time.thread_time() < end:
            pass
        conn.sendall(b"ok " + line + b" " + b"x" * (len(line) % 7) + b"\n")


def middle(addr: str, port: str, laddr: str, lport: str) -> None:
    s = _listen(addr, int(port))
    led = socket.create_connection((laddr, int(lport)))
    led.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    replies = _lines(led)
    while True:                       # one client after another, all over the one ledger connection
        conn, _ = s.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for line in _lines(conn):
            led.sendall(b"settle " + line + b"\n")
            conn.sendall(next(replies) + b"\n")
        conn.close()


def client(maddr: str, mport: str, n: str, gap_ms: str) -> None:
    c = socket.create_connection((maddr, int(mport)))
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    replies = _lines(c)
    out = []
    for i in range(int(n)):
        t0 = time.time_ns()
        c.sendall(f"pay {i} {'y' * (i % 13)}\n".encode())
        next(replies)
        out.append({"i": i, "sent": t0, "answered": time.time_ns()})
        time.sleep(float(gap_ms) / 1000)
    for r in out:
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    role, args = sys.argv[1], sys.argv[2:]
    {"ledger": ledger, "middle": middle, "client": client}[role](*args)
