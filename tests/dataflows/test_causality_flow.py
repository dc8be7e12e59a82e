"""The bytewax causality flow on hand-made rows: 1 vs 2 workers, out-of-order input, ladybug output."""

from __future__ import annotations

import random

from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main
from test_windowing import HOST, lock_scenario, tick

from kprobe.dataflows.causal_step import EventBatch
from kprobe.dataflows.causality import FlowOptions, build_flow
from kprobe.dataflows.windowing import SEC, WindowConfig
from kprobe.sinks.graph_ladybug import LadybugGraph


class ListRows:
    def __init__(self, out: list):
        self.out = out

    def write(self, rows: list[dict]) -> int:
        self.out.extend(rows)
        return len(rows)


def batches(seed: int | None) -> list[EventBatch]:
    items = lock_scenario() + [tick(1500)]
    # a second host with the same scenario: keys spread over workers
    if seed is not None:
        random.Random(seed).shuffle(items)
    out = [EventBatch(HOST, t, (r,)) for t, r in items]
    out += [EventBatch("h2", t, ({**r, "host": "h2"},)) for t, r in items]
    return out


def run(tmp_path, workers: int, seed: int | None):
    res: list = []
    rows: list = []
    db = tmp_path / f"g{workers}-{seed}.lbug"
    flow = build_flow(TestingSource(batches(seed), batch_size=2), graph=lambda: LadybugGraph(db),
                      rows=lambda: ListRows(rows), results=TestingSink(res),
                      options=FlowOptions(WindowConfig(allowed_lateness_ns=1 * SEC)))
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return res, rows, db


def final(rows: list[dict]) -> dict[str, str]:
    return {r["op_id"]: (r["root_kind"], r["root_pid"], r["digest"]) for r in rows}


def test_one_and_two_workers_and_shuffled_input_agree(tmp_path):
    _, rows1, db1 = run(tmp_path, 1, None)
    assert {v[:2] for v in final(rows1).values()} == {("lock_contention", 20)}
    assert len(final(rows1)) == 2                 # one futex operation per host
    for workers, seed in ((2, None), (2, 3), (1, 7)):
        _, rows, _ = run(tmp_path, workers, seed)
        assert final(rows) == final(rows1), (workers, seed)
    g = LadybugGraph(db1)
    try:
        for op_id, (kind, pid, _) in final(rows1).items():
            rc = g.root_cause(op_id)
            assert (rc["kind"], rc["pid"]) == (kind, pid)
    finally:
        g.close()
