"""`kprobe graph` and `kprobe dataflow causality` on a real capture, through the recorder's socket."""

from __future__ import annotations

import json
import subprocess

import pytest

from kprobe.cli import main
from tests.conftest import graph_counts

pytestmark = pytest.mark.kernel



def test_graph_cli_prints_the_query_root_cause_and_is_idempotent(capture, capsys):
    p = capture.workload("causal_lock.py", "250", stdout=subprocess.PIPE)
    out, _ = p.communicate(timeout=10)
    pid, holder, t0, t1 = (int(x) for x in out.split())
    # generous: on a shared 2-CPU machine the writer can lag well behind the rings
    assert capture.session.recorder.wait_drained(60.0), "recorder did not drain in 60 s"
    data = str(capture.data)
    argv = ["graph", "--data", data, "--pid", str(pid), "--from", str(t0), "--to", str(t1)]
    assert main([*argv, "--json"]) == 0
    js = json.loads(capsys.readouterr().out)
    q, a = js["query_root_cause"], js["analysis_root_cause"]
    assert (q["kind"], q["pid"], q["delay_ns"]) == ("lock_contention", holder, a["delay_ns"])
    assert abs(a["delay_ns"] - (t1 - t0)) <= 0.2 * (t1 - t0)
    before = graph_counts(capture.data)
    assert main([*argv, "--cypher"]) == 0
    text = capsys.readouterr().out
    assert "root cause: lock_contention" in text and f"PID {holder}" in text and "MATCH p = (o:Operation {id: $op})" in text
    assert graph_counts(capture.data) == before

    # the flow over the same store (through the running recorder's socket) finds the futex wait itself
    assert main(["dataflow", "causality", "--data", data, "--watch-pid", str(pid), "--workers", "2"]) == 0
    err = capsys.readouterr().err
    assert "analyses emitted" in err
    rows = capture.session.store.query_rows(
        f"SELECT root_kind, root_pid FROM causal_analysis WHERE pid = {pid} AND op_name LIKE 'futex%'")
    assert [(r["root_kind"], int(r["root_pid"])) for r in rows] == [("lock_contention", holder)]
    assert main(["dataflow", "causality", "--data", data, "--watch-pid", str(pid)]) == 0
    assert "0 new rows" in capsys.readouterr().err


def test_graph_cli_rejects_bad_arguments(tmp_path, capsys):
    assert main(["graph", "--data", str(tmp_path), "--span", "xyz"]) == 2
    assert "16 hex digits" in capsys.readouterr().err
    assert main(["graph", "--data", str(tmp_path), "--pid", "5"]) == 2
    assert "--pid needs --from T1 and --to T2" in capsys.readouterr().err
    assert main(["graph", "--data", str(tmp_path), "--incident", "nonsense"]) == 2
    assert "incident" in capsys.readouterr().err
    assert main(["graph", "--data", str(tmp_path), "--pid", "5", "--from", "10", "--to", "5"]) == 2
    assert "--to must be after --from" in capsys.readouterr().err
