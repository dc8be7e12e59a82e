"""Every table kprobe stores, declared once: columns, sort key, time partitions.

Why one module: a newcomer (or a migration) finds each table here and nowhere else, whichever
process writes it. The tables are

* the event tables, one per kernel event type: their columns are derived from the agent's
  conversion in :mod:`kprobe.schemas.tables` (run on an empty batch), so they cannot drift;
* the agent's own tables (``processes``, ``memcg_members``, ``cgroup_cpu``, ``cpu_irq``), rows read from /proc
  and cgroup files rather than a ring buffer: no kernel record defines their columns; ``hosts``, each
  agent's heartbeat;
* ``spans``, OpenTelemetry spans next to the kernel events they are joined with;
* ``causal_analysis``, one row per analysed operation (written by the causality dataflow);
* on a ClickHouse server, ``batch_id``/``batch_row`` on every table and the batch ledger
  ``kprobe_batches`` (the exactly-once key of :mod:`kprobe.sinks.clickhouse_server`).

Tables are declared in the modern form; :mod:`kprobe.sinks.ddl` renders them for the server at
hand (chDB or an old ClickHouse). This module imports nothing heavy at import time (the event
tables' numpy conversion is loaded by :func:`table_defs` only), so the causal engine can read the
span status codes from here without loading numpy.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    """A column; ``type`` is written in the full modern form, e.g. ``LowCardinality(String)``."""

    name: str
    type: str
    codec: str | None = None


@dataclass(frozen=True)
class TableDef:
    """A MergeTree table partitioned by time so retention can drop whole partitions."""

    name: str
    columns: tuple[Column, ...]
    order_by: tuple[str, ...]
    ts_column: str  # UInt64 UTC nanoseconds since the epoch
    partition_minutes: int = 10  # PARTITION BY intDiv(ts, minutes*60e9)
    ttl_seconds: int | None = None
    skip_indexes: tuple[tuple[str, str], ...] = ()  # (expression, type), e.g. ("tid", "minmax")


def _columns(pairs: tuple[tuple[str, str], ...]) -> tuple[Column, ...]:
    return tuple(Column(n, t) for n, t in pairs)


# Partition width of the store's tables; retention drops whole partitions of this many minutes.
PARTITION_MINUTES = 10

# --- the agent's own tables: rows from /proc and cgroup files, one topic each like the event tables

PROCESSES_TABLE = "processes"
PROCESSES_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ts", "UInt64"), ("host", "LowCardinality(String)"), ("tgid", "UInt32"), ("comm", "LowCardinality(String)"),
    ("exe", "String"), ("cmdline", "String"), ("cgroup", "String"), ("container_id", "String"),
    ("service", "LowCardinality(String)"),
    # container and Kubernetes pod (agent/pod_identity.py): runtime, pod uid and QoS class from the
    # cgroup path, the rest from the kubelet's pod list; labels as a JSON object
    ("runtime", "LowCardinality(String)"), ("pod_uid", "String"), ("qos", "LowCardinality(String)"),
    ("namespace", "LowCardinality(String)"), ("pod", "LowCardinality(String)"), ("container", "LowCardinality(String)"),
    ("workload", "LowCardinality(String)"), ("workload_kind", "LowCardinality(String)"), ("labels", "String"),
)

# one row per member of a memory cgroup in reclaim, per snapshot (agent/memcg_members.py)
MEMCG_MEMBERS_TABLE = "memcg_members"
MEMCG_MEMBERS_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ts", "UInt64"), ("host", "LowCardinality(String)"), ("cgroup_id", "UInt64"), ("cgroup", "String"),
    ("tgid", "UInt32"), ("comm", "LowCardinality(String)"),
    ("rss_anon", "UInt64"), ("rss_file", "UInt64"), ("rss_shmem", "UInt64"),
    ("read_bytes", "UInt64"), ("write_bytes", "UInt64"),
    ("memcg_usage", "UInt64"), ("memcg_limit", "UInt64"), ("memcg_anon", "UInt64"), ("memcg_file", "UInt64"),
    ("memcg_dirty", "UInt64"), ("memcg_writeback", "UInt64"),
)

# cgroups with a CPU quota, sampled while they are throttled: the cgroup's cpu.stat counters (cumulative) and one
# row per member with its CPU time so far (agent/cgroup_cpu.py); tgid 0: counters only
CGROUP_CPU_TABLE = "cgroup_cpu"
CGROUP_CPU_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ts", "UInt64"), ("host", "LowCardinality(String)"), ("cgroup_id", "UInt64"), ("cgroup", "String"),
    ("quota_us", "Int64"), ("period_us", "UInt64"), ("nr_periods", "UInt64"), ("nr_throttled", "UInt64"),
    ("throttled_ns", "UInt64"), ("usage_ns", "UInt64"), ("tgid", "UInt32"), ("comm", "LowCardinality(String)"),
    ("cpu_ns", "UInt64"),
)

# interrupt time per CPU (cumulative /proc/stat irq and softirq ns) and each softirq kind's raises so far
# (/proc/softirqs), one row per CPU per sample, written while some CPU is busy in interrupts (agent/cpu_irq.py)
CPU_IRQ_TABLE = "cpu_irq"
SOFTIRQ_KINDS: tuple[str, ...] = ("hi", "timer", "net_tx", "net_rx", "block", "irq_poll", "tasklet", "sched",
                                  "hrtimer", "rcu")
CPU_IRQ_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ts", "UInt64"), ("host", "LowCardinality(String)"), ("cpu", "UInt32"), ("irq_ns", "UInt64"),
    ("softirq_ns", "UInt64"), *((k, "UInt64") for k in SOFTIRQ_KINDS),
)

# one heartbeat row per agent every few seconds (agent/heartbeat.py): which hosts were recording when, on which
# boot, with which clock state and how far their data reached, so a cross-host answer can name a host whose
# data is missing instead of blaming what it can see (causal/hosts.py)
HOSTS_TABLE = "hosts"
HOSTS_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ts", "UInt64"), ("host", "LowCardinality(String)"), ("hostname", "String"), ("machine_id", "String"),
    ("boot_id", "String"), ("agent_version", "LowCardinality(String)"), ("started_ts", "UInt64"),
    ("interval_ms", "UInt32"), ("clock_state", "LowCardinality(String)"), ("clock_synchronised", "UInt8"),
    ("clock_max_error_ns", "UInt64"), ("clock_est_error_ns", "UInt64"), ("clock_conversion_error_ns", "UInt64"),
    ("clock_skew_ns", "Int64"), ("last_event_ts", "UInt64"), ("events_written", "UInt64"), ("events_lost", "UInt64"),
    ("filter", "String"), ("final", "UInt8"),
)

AGENT_TABLES: tuple[str, ...] = (PROCESSES_TABLE, MEMCG_MEMBERS_TABLE, CGROUP_CPU_TABLE, CPU_IRQ_TABLE, HOSTS_TABLE)

# --- spans
# Kept apart from the OTLP decoder (which imports protobuf) so the store can create the table
# without loading the receiver. Columns mirror :data:`kprobe.otel.otlp_decode.SPAN_SCHEMA`; a test checks
# they stay in step. The join with kernel events is host + ``pid`` (resource ``process.pid``) +
# ``tid`` (span attribute ``thread.id``, 0 when absent) + [``ts_ns``, ``end_ns``], so the sort key
# starts with pid; lookups by span or trace id go through bloom-filter skip indexes where the
# server has them (ClickHouse 18.16 gets the same table without them, see sinks/ddl.py).

SPAN_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ts_ns", "UInt64"),
    ("end_ns", "UInt64"),
    ("duration_ns", "UInt64"),
    ("trace_id", "String"),
    ("span_id", "String"),
    ("parent_span_id", "String"),
    ("name", "String"),
    ("kind", "UInt8"),
    ("service", "LowCardinality(String)"),
    ("host", "LowCardinality(String)"),
    ("pid", "UInt32"),
    ("tid", "UInt32"),
    ("status_code", "UInt8"),
    ("status_message", "String"),
    ("attributes", "String"),
    ("events", "String"),
)

SPANS_TABLE = TableDef(
    "spans",
    _columns(SPAN_COLUMNS),
    order_by=("pid", "ts_ns"),
    ts_column="ts_ns",
    partition_minutes=10,
    skip_indexes=(("span_id", "bloom_filter(0.01)"), ("trace_id", "bloom_filter(0.01)")),
)

#: OTLP status codes as stored in ``status_code``.
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2

# --- causal_analysis: one row per analysed operation; readers take the newest per op_id
# (``argMax(..., ts_written)``); (op_id, digest) identifies a row (sinks/analysis_rows.py)

ANALYSIS_TABLE = "causal_analysis"
ANALYSIS_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ts", "UInt64"), ("ts_written", "UInt64"), ("host", "LowCardinality(String)"), ("op_id", "String"),
    ("op_kind", "LowCardinality(String)"), ("op_name", "String"), ("pid", "UInt32"), ("tid", "UInt32"),
    ("start_ns", "UInt64"), ("end_ns", "UInt64"), ("wall_ns", "UInt64"), ("on_cpu_ns", "UInt64"),
    ("runq_ns", "UInt64"), ("blocked_ns", "UInt64"), ("root_kind", "LowCardinality(String)"),
    ("root_pid", "UInt32"), ("root_comm", "String"), ("root_delay_ns", "UInt64"), ("chain", "String"),
    ("analysis", "String"), ("digest", "String"),
)
ANALYSIS_TABLE_DEF = TableDef(ANALYSIS_TABLE, _columns(ANALYSIS_COLUMNS), ("host", "op_id", "ts"), "ts", 10)

# --- the batch ledger of a ClickHouse server: each batch id ``pending`` before its rows are
# inserted, ``done`` after (sinks/clickhouse_server.py)

LEDGER = "kprobe_batches"
LEDGER_DEF = TableDef(
    LEDGER,
    (Column("batch_id", "UInt64"), Column("table", "String"), Column("host", "String"), Column("rows", "UInt64"),
     Column("min_ts", "UInt64"), Column("max_ts", "UInt64"), Column("state", "UInt8"), Column("at", "UInt64")),
    order_by=("batch_id",),
    ts_column="at",
    partition_minutes=24 * 60,
)
# what a server table adds to the store's: the message's batch id and the row's index in it (the dedup key)
BATCH_COLUMNS: tuple[Column, ...] = (Column("batch_id", "UInt64"), Column("batch_row", "UInt32"))


def _time_indexes(names: set[str]) -> tuple[tuple[str, str], ...]:
    """Per-granule min/max of the time columns: the tables are ordered by process, so a read of one
    time window across all processes (``why``'s window read) would otherwise scan every granule;
    within a thread rows are in time order, so each granule covers a short stretch and most are skipped."""
    return tuple((c, "minmax GRANULARITY 1") for c in ("ts", "end_ts") if c in names)


def table_defs() -> list[TableDef]:
    """The store's tables: event tables (columns derived from the agent's conversion), the processes,
    memcg members, OTel spans, cgroup CPU, per-CPU interrupt and agent heartbeat tables."""
    from kprobe.schemas.tables import EVENT_TYPES, table_columns  # numpy: only table creators load it

    defs = []
    for et in EVENT_TYPES:
        cols = tuple(Column(n, t) for n, t in table_columns(et))
        defs.append(TableDef(et.name, cols, et.order_by, "ts", PARTITION_MINUTES,
                             skip_indexes=_time_indexes({c.name for c in cols})))
    defs.append(TableDef(PROCESSES_TABLE, _columns(PROCESSES_COLUMNS), ("tgid", "ts"), "ts", PARTITION_MINUTES))
    defs.append(TableDef(MEMCG_MEMBERS_TABLE, _columns(MEMCG_MEMBERS_COLUMNS), ("cgroup_id", "ts"),
                         "ts", PARTITION_MINUTES))
    defs.append(SPANS_TABLE)
    defs.append(TableDef(CGROUP_CPU_TABLE, _columns(CGROUP_CPU_COLUMNS), ("cgroup_id", "ts"),
                         "ts", PARTITION_MINUTES))
    defs.append(TableDef(CPU_IRQ_TABLE, _columns(CPU_IRQ_COLUMNS), ("cpu", "ts"), "ts", PARTITION_MINUTES))
    defs.append(TableDef(HOSTS_TABLE, _columns(HOSTS_COLUMNS), ("host", "ts"), "ts", PARTITION_MINUTES))
    return defs


def server_table_defs() -> list[TableDef]:
    """A ClickHouse server's tables: the store's plus ``batch_id``/``batch_row`` (the dedup key), and the ledger."""
    defs = [TableDef(d.name, d.columns + BATCH_COLUMNS, d.order_by, d.ts_column,
                     d.partition_minutes, d.ttl_seconds, d.skip_indexes) for d in table_defs()]
    return defs + [LEDGER_DEF]
