"""`kprobe incidents` on a default recording of a host under pgbench, with one fault injected on the database.

PostgreSQL (Debian's binaries, its server pinned to CPU 1, so every backend runs there)
serves pgbench over TCP (the client on CPU 0) for 12 s. Four seconds in, a real-time CPU
hog named by the test starts on CPU 1 for 3 s: each backend then waits in the run queue
for most of a second at a time. Whatever else this shared host runs meanwhile (it is
recorded too), the first incident listed must be the hog's: a wait on CPU 1 whose root cause
is the hog, with the database's backends' waits behind it grouped under it (the head itself,
unless another serving process on this shared host was delayed by the same hog and ranks first).
The hog never blocks: who held CPU 1 is read from every thread's switches there, not only the
database's and its peers' rows (causal/fetch.py ``cpu_rows``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from kprobe.causal.impact import DEFAULT_ANALYSE, ranked_incidents
from kprobe.causal.incidents import DEFAULT_SLOW_NS
from tests.causal.conftest import SystemWide, needs_two_cpus
from tests.protocols.pg_server import PgServer, unavailable

pytestmark = pytest.mark.kernel

# SCHED_FIFO on CPU 1 for argv[1] seconds, named ledger-reindex (the fair server still lets others run 5 %)
HOG = ("import ctypes,os,sys,time\nctypes.CDLL(None).prctl(15, b'ledger-reindex', 0, 0, 0)\n"
       "os.sched_setaffinity(0, {1})\nos.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))\n"
       "e=time.monotonic()+float(sys.argv[1])\nwhile time.monotonic()<e: pass\n")


@pytest.fixture
def capture(system_wide: SystemWide) -> SystemWide:
    needs_two_cpus("the database on one, pgbench on the other")
    return system_wide


@pytest.fixture
def pg() -> Iterator[PgServer]:
    if (why := unavailable()) is not None:
        pytest.skip(why)
    s = PgServer()
    try:
        yield s
    finally:
        s.stop()


def test_a_cpu_hog_on_the_databases_cpu_is_the_first_incident_with_its_root_cause(capture, pg):
    os.sched_setaffinity(pg.proc.pid, {1})           # the postmaster: backends fork from it and keep its CPU
    subprocess.run(pg.client("pgbench", "-i", "-q", "-s", "1", "postgres"), check=True, capture_output=True,
                   timeout=300)
    bench = subprocess.Popen(["taskset", "-c", "0", *pg.client("pgbench", "-n", "-c", "2", "-j", "1", "-T", "12",
                                                               "postgres")],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(4.0)
        h0 = time.time_ns()
        hog = subprocess.Popen([sys.executable, "-c", HOG, "3"])
        hog.wait(60)
        h1 = time.time_ns()
        out, _ = bench.communicate(timeout=120)
    finally:
        bench.kill()
    assert bench.returncode == 0, out
    time.sleep(1.0)
    assert capture.session.recorder.wait_drained(60.0), "recorder did not drain in 60 s"
    # what `kprobe incidents` runs with its defaults (--slow-ms 500, --limit 20, --analyse 5)
    rk = ranked_incidents(capture.session.store, DEFAULT_SLOW_NS, 20, DEFAULT_ANALYSE)
    for r in rk.items[:8]:
        print(r.to_json())
    assert rk.items, "no incidents at all"
    top = rk.items[0]
    # ranking: the first incident is a wait on the hog's CPU while it ran (the fault's doing), not the host's noise
    assert "on CPU 1" in top.incident.what and h0 <= top.incident.end_ns and top.incident.start_ns <= h1, top.to_json()
    assert top.analysed and top.root_cause is not None, top.to_json()
    assert top.root_cause["kind"] == "cpu_preemption" and top.root_cause["culprit"]["pid"] == hog.pid, top.to_json()
    assert top.root_cause["culprit"]["comm"] == "ledger-reindex", top.to_json()
    # the database's waits are this incident: its head, or (when another serving process on this shared host
    # was kept off CPU 1 by the same hog and ranked higher) among its repeats, grouped under the same cause
    victims = [top.incident, *top.repeats]
    assert any(i.comm == "postgres" and i.pid != pg.proc.pid for i in victims), top.to_json()   # a backend
    # the hog's other victims are the same cause: not listed again
    assert all(not (r.root_cause and r.root_cause["culprit"]["pid"] == hog.pid) for r in rk.items[1:])
