"""batch-job: a CPU- and memory-hungry batch process (the noisy neighbour).

N worker threads each loop: read the next chunk of a large (sparse) input file through the page
cache, then hash it. Both the read and the hash release the GIL, so all N threads stay runnable
and compete for the CPU they are pinned to. Inside a memory cgroup whose limit is far below the
file size, every read must first reclaim page cache of the same cgroup (memcg direct reclaim),
so the threads spend part of their CPU time in the kernel's reclaim path. Reading holes needs no
disk I/O: the pressure is pure memory, not disk.

    python -m kprobe.demo.batch_job --name batch-job --threads 5 --seconds 5 --input /tmp/in.dat
"""

from __future__ import annotations

import argparse
import hashlib
import os
import threading
import time

from kprobe.demo.proc import emit, set_comm, wait_go


def ensure_input(path: str, size: int) -> None:
    """A sparse file of ``size`` bytes: reading it fills the page cache without touching the disk."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def worker(fd: int, size: int, start: int, chunk: int, deadline: float, out: list[int]) -> None:
    off, n = start, 0
    while time.monotonic() < deadline:
        data = os.pread(fd, chunk, off)
        hashlib.sha256(data).digest()
        off = (off + chunk) % max(chunk, size - chunk)
        n += len(data)
    out.append(n)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default="batch-job", help="process name (comm) (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=5, help="worker threads (default: %(default)s)")
    ap.add_argument("--seconds", type=float, default=5.0, help="run time (default: %(default)s)")
    ap.add_argument("--input", required=True, help="input file, created sparse if missing")
    ap.add_argument("--input-mb", type=int, default=2048, help="input size when created (default: %(default)s)")
    ap.add_argument("--chunk-kb", type=int, default=1024, help="read size (default: %(default)s)")
    args = ap.parse_args(argv)
    set_comm(args.name)
    size = args.input_mb << 20
    ensure_input(args.input, size)
    wait_go()
    fd = os.open(args.input, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # no readahead: each read allocates what it reads
    deadline = time.monotonic() + args.seconds
    out: list[int] = []
    chunk = args.chunk_kb << 10
    threads = [threading.Thread(target=worker, args=(fd, size, i * (size // args.threads), chunk, deadline, out),
                                name=args.name) for i in range(args.threads)]
    emit(event="started", pid=os.getpid(), threads=args.threads)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    emit(event="done", pid=os.getpid(), bytes=sum(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
