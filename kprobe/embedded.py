"""Embedded mode: recorder + chDB store + control socket in one process.

`kprobe record` and `kprobe run` both start one of these; the same Recorder
feeds Kafka in scale-out mode, only the sink differs.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from kprobe.agent.control import ControlServer
from kprobe.agent.recorder import Recorder, RecorderConfig, Sink
from kprobe.sinks.chdb_store import ChdbStore

log = logging.getLogger("kprobe")


class StoreSink(Sink):
    def __init__(self, store: ChdbStore):
        self.store = store

    def write(self, table: str, columns: dict) -> int:
        return self.store.write(table, columns)


@dataclass
class EmbeddedSession:
    data_dir: Path
    config: RecorderConfig

    def start(self) -> EmbeddedSession:
        self.store = ChdbStore(self.data_dir)
        self.config.status_path = self.data_dir / "status.json"
        self.recorder = Recorder(self.config, StoreSink(self.store), retention=self.store.enforce_retention)
        self.recorder.start()
        self.control = ControlServer(self.data_dir, self._fresh_query, lambda: self.recorder.stats.to_dict()).start()
        self.report_attach(sys.stderr)
        return self

    def _fresh_query(self, sql: str, fmt: str) -> bytes:
        """Queries see what the rings held a moment ago, although the store is flushed rarely."""
        self.recorder.fresh()
        return self.store.query(sql, fmt)

    def report_attach(self, out) -> None:
        st = self.recorder.stats
        ok = [a for a in st.attach if a["attached"]]
        bad = [a for a in st.attach if not a["attached"]]
        print(f"kprobe: attached {len(ok)} programs ({', '.join(sorted({a['section'].split('/')[0] for a in ok}))})",
              file=out)
        for a in bad:
            print(f"kprobe: NOT attached {a['section']} ({a['probe']}): {a['error'][:200]}", file=out)
        for probe, err in st.load_errors.items():
            print(f"kprobe: probe '{probe}' not loaded, its events are missing: {err[:300]}", file=out)
        c = st.clock
        if c:
            print(f"kprobe: clock {c.method}, error bound ±{c.error_ns} ns", file=out)

    def stop(self) -> None:
        self.recorder.stop()
        self.control.stop()
        self.store.close()
