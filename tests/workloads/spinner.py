"""Burns CPU for a number of seconds (victim or hog: pin it with taskset)."""
import sys
import time

sys.stdin.readline()
end = time.monotonic() + float(sys.argv[1])
x = 0
while time.monotonic() < end:
    x += 1
