"""A threaded Python ledger service: the main thread reads 16-byte messages from one client and
hands them to WORKERS threads through a queue.Queue; each worker stamps a message with time.time(),
draws an id (os.urandom), appends a journal line, fsyncs, and replies (a lock keeps replies whole).
Threads hand over through the GIL and the queue's condition variables: futexes, all ordered by the
replay. Prints "ready", then "served N" at the end.

    threaded_svc.py PORT JOURNAL N WORKERS
"""

import os
import queue
import socket
import sys
import threading
import time

MSG = 16


def main() -> int:
    port, journal, n, workers = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(1)
    print("ready", flush=True)
    conn, _ = srv.accept()
    fd = os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    work: queue.Queue = queue.Queue()
    reply_lock = threading.Lock()
    served = [0]

    def worker(me: int) -> None:
        while (item := work.get()) is not None:
            seq, msg = item
            ident = os.urandom(8).hex()
            os.write(fd, f"{seq} {time.time():.6f} w{me} {msg.decode()} id={ident}\n".encode())
            os.fsync(fd)
            with reply_lock:
                conn.sendall(f"ok {seq} w{me} {ident}\n".encode())
                served[0] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    buf = b""
    for seq in range(1, n + 1):
        while len(buf) < MSG:
            chunk = conn.recv(4096)
            if not chunk:
                break
            buf += chunk
        if len(buf) < MSG:
            break
        work.put((seq, buf[:MSG]))
        buf = buf[MSG:]
    for _ in threads:
        work.put(None)
    for t in threads:
        t.join()
    print(f"served {served[0]}", flush=True)
    os.close(fd)
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
