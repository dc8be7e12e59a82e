"""settlement-svc: an UNinstrumented TCP service that appends each settlement to a ledger and fsyncs it.

Protocol: one connection per request, one line ``SETTLE <payment-id> <amount>\\n``, answer
``OK <payment-id>\\n`` after the ledger line is durable; or the same as HTTP/1.1 (``POST /settle`` with a JSON
body ``{"payment_id", "amount"}``, answered 200 with JSON), which the demo's no-OTel mode uses:
kprobe decodes HTTP from socket payloads. Single-threaded on purpose: like many
ledger writers it serialises requests. Reports ``{"event": "listening", "port"}`` once and
``{"event": "settled", "payment", "start_ns", "end_ns", "tid"}`` per request on stdout (for the
orchestrator and tests; the service itself knows nothing of kprobe or OpenTelemetry).

    python -m kprobe.demo.settlement_svc --name settlement-svc --port 0 --ledger /tmp/ledger.log
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import threading

from kprobe.demo.proc import emit, now_ns, set_comm, wait_go


def _complete(data: bytes) -> bool:
    """A whole request: one line, or HTTP headers plus Content-Length bytes of body."""
    if not data.startswith(b"POST "):
        return data.endswith(b"\n")
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    length = next((int(h.split(b":", 1)[1]) for h in head.split(b"\r\n")[1:]
                   if h.lower().startswith(b"content-length:")), 0)
    return len(body) >= length


def _line_request(data: bytes) -> tuple[str, str]:
    parts = data.decode(errors="replace").split()
    return (parts[1] if len(parts) >= 2 else "?"), (parts[2] if len(parts) >= 3 else "0")


def _http_request(data: bytes) -> tuple[str, str]:
    try:
        doc = json.loads(data.partition(b"\r\n\r\n")[2] or b"{}")
    except ValueError:
        doc = {}
    return str(doc.get("payment_id", "?")), str(doc.get("amount", "0"))


def _http_answer(payment: str) -> bytes:
    body = json.dumps({"payment_id": payment, "status": "settled"}).encode()
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n%s" % (len(body), body))


def serve(listener: socket.socket, ledger_fd: int, max_requests: int | None) -> None:
    done = 0
    while max_requests is None or done < max_requests:
        conn, _ = listener.accept()
        t0 = now_ns()
        with conn:
            data = b""
            while not _complete(data):
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            http = data.startswith(b"POST ")
            pid, amount = _http_request(data) if http else _line_request(data)
            os.write(ledger_fd, f"{t0} settle payment={pid} amount={amount}\n".encode())
            os.fsync(ledger_fd)
            try:
                conn.sendall(_http_answer(pid) if http else f"OK {pid}\n".encode())
            except OSError:
                pass  # the caller gave up already (timeout): the ledger entry stands
        emit(event="settled", payment=pid, start_ns=t0, end_ns=now_ns(), tid=threading.get_native_id())
        done += 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default="settlement-svc", help="process name (comm) (default: %(default)s)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 = any free port, reported on stdout")
    ap.add_argument("--ledger", required=True, help="ledger file (appended, fsync'd per request)")
    ap.add_argument("--max-requests", type=int, default=None)
    args = ap.parse_args(argv)
    set_comm(args.name)
    wait_go()
    fd = os.open(args.ledger, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with socket.create_server((args.host, args.port), backlog=64) as listener:
        emit(event="listening", port=listener.getsockname()[1], pid=os.getpid(), tid=threading.get_native_id())
        serve(listener, fd, args.max_requests)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
