"""Tables whose rows the agent produces itself, from /proc and cgroup files rather than a ring buffer.

They travel and are stored like the event tables (one topic each, same sinks);
their columns are declared here because no kernel record defines them.
"""

from __future__ import annotations

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

AGENT_TABLES: tuple[str, ...] = (PROCESSES_TABLE, MEMCG_MEMBERS_TABLE, CGROUP_CPU_TABLE, CPU_IRQ_TABLE)
