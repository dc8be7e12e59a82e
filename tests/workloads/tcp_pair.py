"""Role 'server': accept one connection, read until EOF. Role 'client': connect, send sizes (with an
optional pause in seconds after each send, so a conversation can span many socket-folding intervals),
close.

Prints the local and peer addresses of its socket so the test knows the 4-tuple; the client also
prints the seconds its sending took.
"""
import socket
import sys
import time

sys.stdin.readline()
role = sys.argv[1]
if role == "server":
    ls = socket.socket()
    ls.bind(("127.0.0.1", int(sys.argv[2])))
    ls.listen(1)
    print("listening", flush=True)
    conn, peer = ls.accept()
    total = 0
    while True:
        data = conn.recv(65536)
        if not data:
            break
        total += len(data)
    conn.sendall(b"ok")
    print(total, conn.getsockname()[1], peer[1], flush=True)
    conn.close()
else:
    pause = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    s = socket.create_connection(("127.0.0.1", int(sys.argv[2])))
    t0 = time.monotonic()
    for size in [int(x) for x in sys.argv[3].split(",")]:
        s.sendall(b"y" * size)
        if pause:
            time.sleep(pause)
    took = time.monotonic() - t0
    s.shutdown(socket.SHUT_WR)
    reply = s.recv(16)
    print(s.getsockname()[1], len(reply), f"{took:.3f}", flush=True)
    s.close()
