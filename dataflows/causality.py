"""bytewax causality flow: event batches -> per-host windows -> causal analysis -> graph + analysis rows.

    input (EventBatch | Operation) --key_on host--> stateful "causality" (CausalityState per host)
        --> graph sink (ladybug | Neo4j)      one partition: an embedded database has one writer
        --> analysis rows (store table)       one partition, idempotent (op_id, digest)
        --> optional extra sink (tests: every CausalResult)

All the logic is in causal_step/windowing/evidence (engine-free); this module only
wires it. Inputs are pluggable: bytewax's TestingSource in tests, ``StoreTailSource``
(tails the embedded chDB store, or a running recorder through its socket), or a
Kafka source (dataflows/kafka_io.py, when present). Run it with several workers:

    python -m bytewax.run "kprobe.dataflows.causality:store_flow('/var/lib/kprobe')" -w 2

State is keyed by host, so results do not depend on the number of workers; the
graph and rows writes are idempotent per operation, so a restarted flow (bytewax
recovery, or a re-run over the same data) never duplicates nodes, edges or rows.
"""

from __future__ import annotations

import copy
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, Source, StatefulSourcePartition
from bytewax.operators import StatefulLogic
from bytewax.outputs import FixedPartitionedSink, Sink, StatefulSinkPartition

from kprobe.causal.graph import GraphDelta
from kprobe.dataflows.causal_step import CausalityState, CausalResult, EventBatch, event_batches
from kprobe.dataflows.windowing import SEC, Operation, WindowConfig

# Tables the analysis reads (see causal/fetch.py); spans when the OTLP receiver stored any.
CAUSAL_TABLES = ("offcpu", "syscall", "sock_io", "fault", "reclaim", "block_io", "tcp_retrans", "fd_open",
                 "memcg_members", "spans")
_INTERVAL_TABLES = {"offcpu", "syscall", "reclaim", "block_io"}


class GraphWriter(Protocol):
    def write_many(self, deltas: list[GraphDelta]) -> Any: ...
    def close(self) -> None: ...


class RowsWriter(Protocol):
    def write(self, rows: list[dict[str, Any]]) -> int: ...


# ---------------------------------------------------------------- the stateful step


class _CausalityLogic(StatefulLogic):
    """bytewax adapter around CausalityState; the snapshot is the whole state (recovery resumes windows)."""

    def __init__(self, state: CausalityState | None, config: WindowConfig, idle: timedelta):
        # the builder only gets the resume state; the host (the key) comes with the first item
        self.state = state
        self.config = config
        self.idle = idle
        self.last_item = datetime.now(UTC)

    def on_item(self, value: EventBatch | Operation) -> tuple[Iterable[CausalResult], bool]:
        self.last_item = datetime.now(UTC)
        if self.state is None:
            self.state = CausalityState.new(value.host, self.config)
        if isinstance(value, Operation):
            return self.state.on_operation(value), StatefulLogic.RETAIN
        return self.state.on_rows(value), StatefulLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[CausalResult], bool]:
        return (self.state.on_idle() if self.state else []), StatefulLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[CausalResult], bool]:
        return (self.state.on_end() if self.state else []), StatefulLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return self.last_item + self.idle if self.state and self.state.window.pending else None

    def snapshot(self) -> CausalityState | None:
        return copy.deepcopy(self.state)


# ---------------------------------------------------------------- sinks (one partition each)


class _WriterPart(StatefulSinkPartition):
    def __init__(self, write: Callable[[list[Any]], None], close: Callable[[], None]):
        self._write, self._close = write, close

    def write_batch(self, values: list[Any]) -> None:
        self._write(values)

    def snapshot(self) -> None:
        return None

    def close(self) -> None:
        self._close()


class GraphSink(FixedPartitionedSink):
    """Writes each analysis' GraphDelta; the factory runs on the worker owning the single partition."""

    def __init__(self, factory: Callable[[], GraphWriter]):
        self.factory = factory

    def list_parts(self) -> list[str]:
        return ["graph"]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _WriterPart:
        g = self.factory()

        return _WriterPart(lambda values: g.write_many(list(values)), g.close)


class RowsSink(FixedPartitionedSink):
    def __init__(self, factory: Callable[[], RowsWriter]):
        self.factory = factory

    def list_parts(self) -> list[str]:
        return ["rows"]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _WriterPart:
        w = self.factory()
        return _WriterPart(lambda rows: w.write(list(rows)), lambda: None)


# ---------------------------------------------------------------- the flow


@dataclass
class FlowOptions:
    window: WindowConfig
    idle_s: float = 2.0


def build_flow(source: Source, graph: Callable[[], GraphWriter] | None = None,
               rows: Callable[[], RowsWriter] | None = None, results: Sink | None = None,
               options: FlowOptions | None = None, name: str = "kprobe_causality",
               prepare: Callable[[Any], Iterable[EventBatch | Operation]] | None = None) -> Dataflow:
    """The causality dataflow over any source of ``EventBatch`` (and optional explicit ``Operation``) items.

    ``prepare`` turns a source's raw items into those (e.g. a Kafka message: decode the
    wire format, then ``causal_step.event_batches(table, record_batch.to_pylist(), host)``).
    """
    opts = options or FlowOptions(WindowConfig())
    flow = Dataflow(name)
    items = op.input("events", flow, source)
    if prepare is not None:
        items = op.flat_map("prepare", items, prepare)
    keyed = op.key_on("by_host", items, lambda x: x.host)
    idle = timedelta(seconds=opts.idle_s)
    out = op.stateful("causality", keyed, lambda resume: _CausalityLogic(resume, opts.window, idle))
    found = op.filter_map("analysed", out, lambda kv: kv[1] if kv[1].analysis is not None else None)
    if graph is not None:
        op.output("graph", op.map("graph_delta", found, lambda r: ("graph", r.delta)), GraphSink(graph))
    if rows is not None:
        op.output("rows", op.map("analysis_row", found, lambda r: ("rows", r.row)), RowsSink(rows))
    if results is not None:
        op.output("results", out, results)
    return flow


# ---------------------------------------------------------------- tailing the store


def _evt(table: str, cols: set[str]) -> str:
    if table == "spans":
        return "end_ns"
    return "greatest(ts, end_ts)" if "end_ts" in cols else "ts"


class StoreTailSource(FixedPartitionedSource):
    """Reads the causal tables of a store in event-time slices; one partition (the store has one reader).

    ``follow=False``: read everything up to the newest event present at start, then end
    (analyses fire at end of input). ``follow=True``: keep polling; rows newer than
    ``now - settle_ns`` are left for the next poll so the recorder's batches have landed.
    Resume state is the per-table cursor (event time read up to).
    """

    def __init__(self, open_store: Callable[[], Any], follow: bool = False, poll_s: float = 1.0,
                 settle_ns: int = 3 * SEC, slice_ns: int = 5 * SEC, default_host: str | None = None):
        self.open_store, self.follow, self.poll_s = open_store, follow, poll_s
        self.settle_ns, self.slice_ns, self.default_host = settle_ns, slice_ns, default_host

    def list_parts(self) -> list[str]:
        return ["store"]

    def build_part(self, step_id: str, for_part: str, resume_state: dict[str, int] | None) -> _TailPart:
        return _TailPart(self, self.open_store(), resume_state or {})


class _TailPart(StatefulSourcePartition):
    def __init__(self, src: StoreTailSource, store: Any, cursor: dict[str, int]):
        self.src, self.store, self.cursor = src, store, dict(cursor)
        have = {r["name"] for r in store.query_rows(
            "SELECT name FROM system.tables WHERE database = currentDatabase()")}
        self.tables: dict[str, str] = {}
        for t in CAUSAL_TABLES:
            if t in have:
                cols = {r["name"] for r in store.query_rows(
                    f"SELECT name FROM system.columns WHERE database = currentDatabase() AND table = '{t}'")}
                self.tables[t] = _evt(t, cols)
        self.default_host = src.default_host or self._kernel_host()
        self.end = None if src.follow else self._newest()
        for t in self.tables:
            self.cursor.setdefault(t, self._oldest(t) - 1)
        self._awake: datetime | None = None

    def _kernel_host(self) -> str:
        """Spans whose SDK set no host.name belong to the host whose agent received them (the store's)."""
        for t in ("offcpu", "syscall"):
            if t in self.tables:
                rows = self.store.query_rows(f"SELECT host FROM {t} WHERE host != '' LIMIT 1")
                if rows:
                    return str(rows[0]["host"])
        return socket.gethostname()

    def _newest(self) -> int:
        return max((int(r["m"]) for t, e in self.tables.items()
                    for r in self.store.query_rows(f"SELECT max({e}) AS m FROM {t}")), default=0)

    def _oldest(self, t: str) -> int:
        rows = self.store.query_rows(f"SELECT min({self.tables[t]}) AS m FROM {t}")
        m = int(rows[0]["m"]) if rows and rows[0]["m"] not in (None, "") else 0
        return m if m > 0 else (self.end or time.time_ns())

    def next_batch(self) -> list[EventBatch]:
        upto = self.end if self.end is not None else time.time_ns() - self.src.settle_ns
        if self.end is not None and all(c >= self.end for c in self.cursor.values()):
            raise StopIteration
        out: list[EventBatch] = []
        for t, e in self.tables.items():
            lo = self.cursor[t]
            hi = min(upto, lo + self.src.slice_ns)
            if hi <= lo:
                continue
            rows = self.store.query_rows(f"SELECT * FROM {t} WHERE {e} > {int(lo)} AND {e} <= {int(hi)} "
                                         f"ORDER BY {e}")
            self.cursor[t] = hi
            out.extend(event_batches(t, rows, self.default_host))
        if not out and self.end is None:
            self._awake = datetime.now(UTC) + timedelta(seconds=self.src.poll_s)
        else:
            self._awake = None
        return out

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> dict[str, int]:
        return dict(self.cursor)


# ---------------------------------------------------------------- `python -m bytewax.run` entry point


def store_flow(data_dir: str, graph: str = "ladybug", follow: bool = False, lateness_s: float = 2.0,
               slow_ms: float = 100.0, neo4j_auth: str | None = None) -> Dataflow:
    """The flow over a data directory's store: graph into ladybug (default) or a Neo4j URI, rows into the store.

    One store object serves the tail input and the rows output (a chDB directory
    has one owner process; with a recorder running both go through its socket).
    """
    from kprobe.query.client import open_store
    from kprobe.sinks.analysis_rows import AnalysisRowsSink

    data = Path(data_dir)
    store = open_store(data)
    opts = FlowOptions(WindowConfig(allowed_lateness_ns=int(lateness_s * SEC),
                                    slow_syscall_ns=int(slow_ms * 1_000_000)))
    return build_flow(StoreTailSource(lambda: store, follow=follow), graph_factory(data, graph, neo4j_auth),
                      lambda: AnalysisRowsSink(store), options=opts)


def graph_factory(data: Path, graph: str, neo4j_auth: str | None = None) -> Callable[[], GraphWriter]:
    if graph == "ladybug":
        from kprobe.sinks.graph_ladybug import LadybugGraph

        return lambda: LadybugGraph.in_data_dir(data)
    if graph.startswith(("bolt://", "neo4j://", "bolt+s://", "neo4j+s://")):
        from kprobe.sinks.graph_neo4j import Neo4jGraph, parse_auth

        return lambda: Neo4jGraph(graph, auth=parse_auth(neo4j_auth))
    raise ValueError(f"graph must be 'ladybug' or a bolt:// / neo4j:// URI, got {graph!r}")
