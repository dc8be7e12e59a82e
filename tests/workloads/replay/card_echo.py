"""A payment front end that gets one request in pieces and prints a receipt quoting the card.

Used by tests/replay/test_replay_cards_kernel.py: the card number reaches the process split
across two recv() calls, and leaves it whole in one write to stdout.
"""

import socket
import sys

srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1])))
srv.listen(1)
print("ready", flush=True)
conn, _ = srv.accept()
buf = b""
while not buf.endswith(b"\n"):
    buf += conn.recv(4096)
fields = dict(kv.split("=", 1) for kv in buf.decode().strip().split("&"))
print(f"receipt card={fields['card']} cvv={fields['cvv']} amount={fields['amount']}", flush=True)
conn.sendall(b"ok\n")
conn.close()
