"""The embedded mode's sink: batches go straight into the in-process chDB store."""

from __future__ import annotations

import numpy as np

from kprobe.sinks.chdb_store import ChdbStore
from kprobe.sinks.sink import Sink


class StoreSink(Sink):
    def __init__(self, store: ChdbStore):
        self.store = store

    def write(self, table: str, columns: dict[str, np.ndarray]) -> int:
        return self.store.write(table, columns)
