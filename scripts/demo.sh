#!/usr/bin/env bash
# The README's main job (embedded mode, one machine, no servers): record a small
# payment-like workload for its lifetime, then show what the kernel saw.
# Needs root (eBPF). Data goes to ${KPROBE_DATA:-/tmp/kprobe-demo}.
set -euo pipefail
cd "$(dirname "$0")/.."
KP=".venv/bin/kprobe"
DATA=${KPROBE_DATA:-/tmp/kprobe-demo}
rm -rf "$DATA"
LEDGER=$(mktemp -d)/ledger.log

echo "== kprobe run: a settlement-like writer (ledger writes + fsync) beside a CPU hog on the same CPU"
"$KP" run --data "$DATA" -- sh -c "
  taskset -c 0 python3 -c 'import time
e = time.monotonic() + 1.0
while time.monotonic() < e: pass' &
  taskset -c 0 python3 -c '
import os, time
fd = os.open(\"$LEDGER\", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
for i in range(20):
    os.write(fd, b\"settle payment %05d amount 100.00\\n\" % i)
    os.fsync(fd)
    time.sleep(0.02)
'
  wait"

echo
echo "== kprobe stats"
"$KP" stats --data "$DATA"
echo
echo "== the ledger writer's longest off-CPU intervals (who preempted it, who woke it)"
"$KP" sql --data "$DATA" "SELECT comm, tid, reason, round(dur_ns/1e6, 3) AS ms, cpu_off AS cpu,
  preemptor_comm, preemptor_tgid, waker_comm FROM offcpu WHERE comm = 'python3'
  ORDER BY dur_ns DESC LIMIT 8"
echo
echo "== its ledger writes and fsyncs"
"$KP" sql --data "$DATA" "SELECT syscall, fd, count() AS calls, sum(bytes) AS bytes,
  round(max(dur_ns)/1e6, 3) AS max_ms FROM syscall WHERE syscall IN ('write','fsync') GROUP BY syscall, fd"
echo
echo "Explore further: $KP events --data $DATA --type offcpu syscall | less"
