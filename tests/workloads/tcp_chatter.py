"""Role 'server': accept one connection, read until EOF, print the byte total. Role 'client': connect,
send each size with a pause between sends (so the conversation spans many socket-folding intervals),
then print its local port, the number of sends and the seconds the sending took.
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
    conn, _ = ls.accept()
    total = 0
    while data := conn.recv(65536):
        total += len(data)
    print(total, flush=True)
    conn.close()
else:
    sizes = [int(x) for x in sys.argv[3].split(",")]
    pause = float(sys.argv[4])
    s = socket.create_connection(("127.0.0.1", int(sys.argv[2])))
    t0 = time.monotonic()
    for size in sizes:
        s.sendall(b"z" * size)
        time.sleep(pause)
    took = time.monotonic() - t0
    s.shutdown(socket.SHUT_WR)
    print(s.getsockname()[1], len(sizes), f"{took:.3f}", flush=True)
    s.close()
