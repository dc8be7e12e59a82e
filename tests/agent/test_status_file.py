"""status.json is how `kprobe stats` and the API see a running recorder: written every second by
the writer thread, which also does every insert. A status that cannot be written must cost only
the status (counted, logged once, in last_error), never the inserts."""

from __future__ import annotations

import json
from pathlib import Path

from kprobe.agent.recorder import Recorder, RecorderConfig


def test_a_status_that_cannot_be_written_is_counted_and_the_writer_goes_on(tmp_path: Path):
    path = tmp_path / "status.json"
    rec = Recorder(RecorderConfig(status_path=path), None)  # type: ignore[arg-type]  # no insert here
    rec.stats.resources = {"cpu_pct": 1.5}
    rec._write_status()
    assert json.loads(path.read_text())["resources"] == {"cpu_pct": 1.5}
    rec.stats.resources = {"cpu_pct": object()}          # a value JSON has no type for
    rec._write_status()
    rec._write_status()
    assert rec.stats.status_errors == 2 and rec.stats.last_error.startswith("status.json: "), rec.stats.last_error
    assert json.loads(path.read_text())["resources"] == {"cpu_pct": 1.5}   # the last good one stays
