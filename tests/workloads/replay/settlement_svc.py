"""A settlement-like service: accept one payment-handler connection; per request line
(payment id, amount) take a timestamp, draw a settlement reference, append the ledger line,
fsync it, and reply. Argument 4 = "fixed" acknowledges before persisting (the what-if fix)."""

import json
import os
import socket
import sys
import time


def main() -> int:
    port, ledger_path, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    fixed = len(sys.argv) > 4 and sys.argv[4] == "fixed"
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(1)
    print("ready", flush=True)
    conn, _ = srv.accept()
    fd = os.open(ledger_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    buf = b""
    for _ in range(n):
        while b"\n" not in buf:
            chunk = conn.recv(4096)
            if not chunk:
                return 0
            buf += chunk
        line, buf = buf.split(b"\n", 1)
        req = json.loads(line)
        ts = time.time()
        ref = os.urandom(6).hex()
        entry = f"{ts:.6f} settle {req['payment']} {req['amount']:.2f} ref={ref}\n".encode()
        reply = json.dumps({"payment": req["payment"], "status": "settled", "ref": ref}).encode() + b"\n"
        if fixed:
            conn.sendall(reply)
        os.write(fd, entry)
        try:
            os.fsync(fd)
        except OSError:
            pass  # the ledger may be a FIFO to a ledger shipper: nothing to sync
        if not fixed:
            conn.sendall(reply)
    os.close(fd)
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
