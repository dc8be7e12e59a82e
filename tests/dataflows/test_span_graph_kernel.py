"""A span from the real OTel SDK, real kernel: `kprobe graph --span` and the causality flow agree.

The span's thread waits for a CPU shared with a pinned real-time hog (the same ground truth as
tests/causal/test_why_span_kernel.py). The CLI (a separate process, through the recorder's
socket) writes the span's graph; the flow, reading the same store, must trigger on the span
itself, reach the same root cause and MERGE onto the same nodes (counts unchanged).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from bytewax.testing import run_main

from kprobe.causal.graph import span_op_id
from kprobe.dataflows.causality import FlowOptions, StoreTailSource, build_flow
from kprobe.dataflows.windowing import WindowConfig
from kprobe.schemas.store_tables import ANALYSIS_TABLE
from kprobe.sinks.analysis_rows import AnalysisRowsSink
from kprobe.sinks.graph_ladybug import LadybugGraph
from tests.conftest import graph_counts, otel_span_beside_hog

pytestmark = pytest.mark.kernel




def test_span_graph_from_cli_and_flow_agree(otel_session) -> None:
    truth, hog_pid, waited = otel_span_beside_hog(otel_session, hog_s=30.0)
    mark = time.monotonic_ns()
    deadline = time.monotonic() + 20
    while otel_session.recorder.stats.last_written_mono_ns < mark and time.monotonic() < deadline:
        time.sleep(0.01)

    data = otel_session.data_dir
    r = subprocess.run([sys.executable, "-m", "kprobe", "graph", "--data", str(data), "--span", truth["span_id"],
                        "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    js = json.loads(r.stdout)
    op_id = span_op_id(truth["trace_id"], truth["span_id"])
    assert js["op_id"] == op_id
    q = js["query_root_cause"]
    assert (q["kind"], q["pid"]) == ("cpu_preemption", hog_pid), js
    assert abs(q["delay_ns"] - waited) <= 0.2 * waited, (q["delay_ns"], waited)
    before = graph_counts(data)

    store = otel_session.store
    flow = build_flow(StoreTailSource(lambda: store), graph=lambda: LadybugGraph.in_data_dir(data),
                      rows=lambda: AnalysisRowsSink(store),
                      options=FlowOptions(WindowConfig(watch_pids=frozenset())))    # spans only
    run_main(flow)
    rows = store.query_rows(f"SELECT op_kind, root_kind, root_pid, root_delay_ns FROM {ANALYSIS_TABLE} "
                            f"WHERE op_id = '{op_id}'")
    assert [(x["op_kind"], x["root_kind"], int(x["root_pid"])) for x in rows] == [("span", "cpu_preemption", hog_pid)]
    assert int(rows[0]["root_delay_ns"]) == q["delay_ns"]
    assert graph_counts(data) == before
