"""Role 'server': accept one connection, read until EOF. Role 'client': connect, send sizes, close.

Prints the local and peer addresses of its socket so the test knows the 4-tuple.
"""
import socket
import sys

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
    s = socket.create_connection(("127.0.0.1", int(sys.argv[2])))
    for size in [int(x) for x in sys.argv[3].split(",")]:
        s.sendall(b"y" * size)
    s.shutdown(socket.SHUT_WR)
    reply = s.recv(16)
    print(s.getsockname()[1], len(reply), flush=True)
    s.close()
