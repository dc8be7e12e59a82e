"""The per-CPU interrupt sampler (agent/cpu_irq.py): what it reads, and that a quiet host costs no rows.

A /proc-shaped directory the test writes stands in for /proc only to set the counters
it asserts on; the last test reads this host's real /proc.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from kprobe.agent.cpu_irq import CpuIrq, parse_softirqs, parse_stat

TICK = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
SOFTIRQS = """                    CPU0       CPU1
          HI:          0          0
       TIMER:        100        200
      NET_RX:       {rx0}        {rx1}
       BLOCK:          7          9
"""


def _write(d: Path, si0: int, si1: int, rx1: int) -> None:
    (d / "stat").write_text(f"cpu  1 2 3 4 5 6 7 0 0 0\ncpu0 1 2 3 4 5 0 {si0} 0 0 0\n"
                            f"cpu1 1 2 3 4 5 2 {si1} 0 0 0\nintr 1\n")
    (d / "softirqs").write_text(SOFTIRQS.format(rx0=5, rx1=rx1))


def test_parses_the_per_cpu_counters():
    assert parse_stat("cpu  1 1 1 1 1 1 1\ncpu0 1 2 3 4 5 6 7 8\ncpu1 bad\n", TICK) == {0: (6 * TICK, 7 * TICK)}
    got = parse_softirqs(SOFTIRQS.format(rx0=5, rx1=11))
    assert got[1]["net_rx"] == 11 and got[0]["timer"] == 100 and got[1]["block"] == 9


def test_rows_only_while_a_cpu_is_busy_in_interrupts_with_the_quiet_sample_before_as_base(tmp_path):
    s = CpuIrq(proc=tmp_path, every_ns=1, idle_every_ns=100 * 10**9, busy_share=0.05)
    sec = 1_000_000_000
    _write(tmp_path, 10, 10, 1)
    assert s.sample(1 * sec, "h") is not None            # the first sample: the base of everything after
    _write(tmp_path, 10, 11, 2)                          # 1 tick of 100 in a second: quiet
    assert s.sample(2 * sec, "h") is None
    _write(tmp_path, 10, 60, 900)                        # 49 ticks: CPU 1 busy
    cols = s.sample(3 * sec, "h")
    assert cols is not None and list(cols["ts"]) == [2 * sec] * 2 + [3 * sec] * 2   # with the base before it
    assert list(cols["cpu"]) == [0, 1, 0, 1] and int(cols["softirq_ns"][3]) == 60 * TICK
    assert int(cols["irq_ns"][3]) == 2 * TICK and int(cols["net_rx"][3]) == 900
    _write(tmp_path, 10, 61, 901)                        # quiet again: this sample closes the busy stretch
    assert s.sample(4 * sec, "h") is not None
    assert s.sample(5 * sec, "h") is None
    assert s.stats["busy_samples"] == 1 and s.stats["rows"] == 8


def test_reads_this_hosts_proc():
    rows = CpuIrq().read(time.time_ns(), "h")
    assert [r["cpu"] for r in rows] == list(range(len(rows))) and len(rows) >= 1
    assert all(r["softirq_ns"] >= 0 and r["timer"] > 0 for r in rows)
