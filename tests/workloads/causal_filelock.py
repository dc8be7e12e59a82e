"""A lock held across processes, by a holder named by the test, for a known time (flock, fcntl, OFD, semop).

holder KIND PATH HOLD_MS NAME: takes the lock (for ``sem``: creates a SysV semaphore at 0, i.e. held),
  prints "ready <semid>" (0 for file locks), sleeps HOLD_MS after "go" on stdin, then releases and exits.
victim KIND PATH SEMID NAME: opens the file, prints "ready"; after "go" on stdin blocks acquiring the same lock and prints
  "pid start_ns end_ns": (end - start) is the measured wait.

Both rename themselves (prctl PR_SET_NAME) so the culprit and the victim carry names the test chose.
"""
from __future__ import annotations

import ctypes
import fcntl
import os
import struct
import sys
import time

libc = ctypes.CDLL(None, use_errno=True)
F_OFD_SETLKW = 38
IPC_PRIVATE, IPC_CREAT, IPC_RMID, SETVAL = 0, 0o1000, 0, 16


class SemBuf(ctypes.Structure):
    _fields_ = [("sem_num", ctypes.c_ushort), ("sem_op", ctypes.c_short), ("sem_flg", ctypes.c_short)]


def name(n: str) -> None:
    libc.prctl(15, n.encode()[:15], 0, 0, 0)


def semop(semid: int, op: int) -> None:
    b = SemBuf(0, op, 0)
    if libc.semop(semid, ctypes.byref(b), 1) != 0:
        raise OSError(ctypes.get_errno(), "semop")


def lock(kind: str, fd: int) -> None:
    if kind == "flock":
        fcntl.flock(fd, fcntl.LOCK_EX)
    elif kind == "fcntl":
        fcntl.lockf(fd, fcntl.LOCK_EX)          # F_SETLKW on the whole file
    elif kind == "ofd":
        fcntl.fcntl(fd, F_OFD_SETLKW, struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0, 0) + b"\0" * 4)
    else:
        raise SystemExit(f"unknown lock kind {kind}")


def main() -> None:
    role, kind, path = sys.argv[1], sys.argv[2], sys.argv[3]
    name(sys.argv[5])
    if role == "holder":
        hold_ms = int(sys.argv[4])
        semid, fd = 0, -1
        if kind == "sem":
            semid = libc.semget(IPC_PRIVATE, 1, IPC_CREAT | 0o600)
            if semid < 0 or libc.semctl(semid, 0, SETVAL, 0) != 0:
                raise OSError(ctypes.get_errno(), "semget")
        else:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            lock(kind, fd)
        print("ready", semid, flush=True)
        sys.stdin.readline()
        time.sleep(hold_ms / 1000)
        if kind == "sem":
            semop(semid, 1)
            time.sleep(0.2)           # the victim takes it before the set goes away
            libc.semctl(semid, 0, IPC_RMID)
        else:
            os.close(fd)              # releases flock, record and OFD locks alike
        return
    fd = os.open(path, os.O_RDWR) if kind != "sem" else -1
    print("ready", flush=True)
    sys.stdin.readline()
    if kind == "sem":
        semid = int(sys.argv[4])
        t0 = time.time_ns()
        semop(semid, -1)
        t1 = time.time_ns()
    else:
        t0 = time.time_ns()
        lock(kind, fd)
        t1 = time.time_ns()
        os.close(fd)
    print(os.getpid(), t0, t1, flush=True)


if __name__ == "__main__":
    main()
