"""The one interface every destination of the agent's batches implements.

The recorder hands each converted batch (one table, numpy columns) to a sink and
counts what it returns; the embedded store and Kafka differ only behind this.
"""

from __future__ import annotations

import numpy as np


class Sink:
    """Where batches go: the embedded chDB store, or Kafka in scale-out mode."""

    def write(self, table: str, columns: dict[str, np.ndarray]) -> int:  # pragma: no cover - interface
        """Store or send ``columns`` (one table's rows); returns the rows accepted."""
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - interface
        pass
