"""Sleeps a known time N times; prints its tid."""
import sys
import threading
import time

sys.stdin.readline()
ms, n = float(sys.argv[1]), int(sys.argv[2])
print(threading.get_native_id(), flush=True)
for _ in range(n):
    time.sleep(ms / 1000)
