"""Event types: which ring, which record layout, and how a batch becomes table columns.

The converter for a type is the single source of that type's columns: the DDL
is derived by running it on an empty batch, so the stored schema cannot drift
from what the agent produces. Every conversion is vectorised (numpy over the
whole batch); strings are decoded once per distinct value.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kprobe.schemas import layouts as L
from kprobe.schemas import syscalls

Columns = dict[str, np.ndarray]

# String columns with few distinct values: stored as LowCardinality where the server allows it.
LOW_CARDINALITY = {
    "comm", "preemptor_comm", "waker_comm", "displaced_comm", "killer_comm", "service", "reason", "kind",
    "preemptor_process", "waker_process", "displaced_process",
    "syscall", "host", "dir", "oldstate", "newstate", "rwbs", "state", "namespace", "pod",
}

OFFCPU_REASONS = np.array(["", "preempted", "sleep", "uninterruptible", "other", "new"], dtype=object)
PROC_KINDS = np.array(["", "fork", "exec", "exit"], dtype=object)
RECLAIM_KINDS = np.array(["", "direct", "memcg"], dtype=object)
TCP_STATES = np.array(
    ["", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSE",
     "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV", "BOUND_INACTIVE", "?", "?", "?"],
    dtype=object,
)
SOCK_DIRS = np.array(["send", "recv"], dtype=object)


def _distinct(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of one row per distinct value, inverse) of equal byte rows, via a 64-bit hash.

    Sorting the raw byte strings (np.unique on S16/axis=0) dominated batch conversion, and so
    did sorting the hashes (np.unique on uint64: 107 ms per 1M rows); a hash table
    (pandas.factorize) groups them in 13 ms. A hash collision is detected by comparing every
    row with its representative, and then the exact (slow) path is taken, so the result is
    always exact.
    """
    import pandas as pd  # imported by the converting threads only (~0.3 s)

    n, width = rows.shape
    pad = (-width) % 8
    words = np.ascontiguousarray(np.pad(rows, ((0, 0), (0, pad))) if pad else rows).view("<u8")
    mult = np.uint64(0x9E3779B97F4A7C15)
    h = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(words.shape[1]):
            h = (h ^ words[:, j]) * mult
    inverse, uniques = pd.factorize(h)
    rep = np.empty(len(uniques), dtype=np.int64)
    rep[inverse] = np.arange(n)
    # Each step (h ^ w) * odd is a bijection of w, so rows with equal hashes and equal leading
    # words also have equal last words: only the leading words need comparing (none for 8 bytes).
    lead = words[:, :-1]
    if not (lead[rep][inverse] == lead).all():
        _, rep, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
    return rep, inverse.reshape(-1)


def load_converters() -> None:
    """Import what converting a batch needs (pandas, ~0.5 s of CPU) when a writer starts.

    Why: otherwise the first batch pays it, and with no hook on opens or syscalls the first batch
    of a default recording comes at its first flush, 15 s in, where it looked like steady-state
    cost (bench/overhead.py: recorder CPU 4.6-5.7 % of a core under pgbench instead of ~1.4 %),
    and after the start-up trim of library code, so it also stayed resident until the next trim.
    """
    import pandas  # noqa: F401


def decode_str(raw: np.ndarray) -> np.ndarray:
    """Fixed-size NUL-padded C strings -> Python str, decoding each distinct value once."""
    if raw.size == 0:
        return np.empty(0, dtype=object)
    rep, inverse = _distinct(np.ascontiguousarray(raw).view(np.uint8).reshape(len(raw), raw.dtype.itemsize))
    decoded = np.array([raw[i].split(b"\0", 1)[0].decode("utf-8", "replace") for i in rep.tolist()], dtype=object)
    return decoded[inverse]


def format_addr(raw: np.ndarray, family: np.ndarray) -> np.ndarray:
    """16-byte address fields -> text, once per distinct (address, family)."""
    if raw.size == 0:
        return np.empty(0, dtype=object)
    key = np.concatenate([raw.reshape(len(raw), 16), family.astype("<u2").view(np.uint8).reshape(-1, 2)], axis=1)
    rep, inverse = _distinct(key)
    out = []
    for row in key[rep]:
        fam = int(row[16]) | (int(row[17]) << 8)
        out.append(str(ipaddress.IPv4Address(bytes(row[:4]))) if fam == 2 else str(ipaddress.IPv6Address(bytes(row[:16]))))
    return np.array(out, dtype=object)[inverse]


def lookup(table: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return table[np.clip(idx.astype(np.int64), 0, len(table) - 1)]


def utc(kernel_ns: np.ndarray, offset_ns: int) -> np.ndarray:
    """Monotonic kernel ns -> UTC ns; 0 means 'absent' and stays 0."""
    k = kernel_ns.astype(np.uint64)
    return np.where(k == 0, np.uint64(0), k + np.uint64(offset_ns)).astype(np.uint64)


def _offcpu(r: np.ndarray, off: int) -> Columns:
    wake = r["wake_ns"].astype(np.int64)
    on = r["on_ns"].astype(np.int64)
    offn = r["off_ns"].astype(np.int64)
    # Blocked with no wake-up seen (the kernel skipped the waking program, counted as
    # offcpu_wake_unseen): asleep is likelier than queued for the whole interval; wake_ts stays 0.
    unseen = (wake == 0) & (r["reason"] != L.KP_OFF_PREEMPTED)
    ready = np.where(wake > 0, wake, np.where(unseen, on, offn))
    return {
        "ts": utc(r["off_ns"], off),
        "end_ts": utc(r["on_ns"], off),
        "wake_ts": utc(r["wake_ns"], off),
        "dur_ns": (on - offn).astype(np.uint64),
        "blocked_ns": (ready - offn).astype(np.uint64),
        "runq_ns": (on - ready).astype(np.uint64),
        "tgid": r["tgid"], "tid": r["tid"], "comm": decode_str(r["comm"]),
        "reason": lookup(OFFCPU_REASONS, r["reason"]), "prev_state": r["prev_state"],
        "cpu_off": r["cpu_off"], "cpu_on": r["cpu_on"],
        "preemptor_tgid": r["preemptor_tgid"], "preemptor_tid": r["preemptor_tid"],
        "preemptor_comm": decode_str(r["preemptor_comm"]),
        "waker_tgid": r["waker_tgid"], "waker_tid": r["waker_tid"], "waker_comm": decode_str(r["waker_comm"]),
        "displaced_tgid": r["displaced_tgid"], "displaced_tid": r["displaced_tid"],
        "displaced_comm": decode_str(r["displaced_comm"]),
        "displaced_since": utc(r["displaced_since_ns"], off),
        "preemptor_process": decode_str(r["preemptor_process"]), "waker_process": decode_str(r["waker_process"]),
        "displaced_process": decode_str(r["displaced_process"]),
        "syscall": syscall_names(r["sys_nr"]),
        "fd": np.where(r["sys_nr"] >= 0, r["sys_arg0"].astype(np.int64), -1),
        "skaddr": r["skaddr"],
        "saddr": _sock_addr(r["saddr"], r["family"]), "sport": r["sport"],
        "daddr": _sock_addr(r["daddr"], r["family"]), "dport": r["dport"],
        "short_n": r["short_n"], "short_ns": r["short_ns"],
        # a regular file behind fd: its device (the kernel's encoding, as block_io.dev) and inode (0: not a file)
        "dev": r["file_dev"], "ino": r["file_ino"],
    }


def _sock_addr(raw: np.ndarray, family: np.ndarray) -> np.ndarray:
    """Addresses of rows that name a socket; '' for the others (family 0)."""
    out = format_addr(raw, family)
    return np.where(family == 0, "", out).astype(object) if out.size else out


def syscall_names(nr: np.ndarray) -> np.ndarray:
    """Syscall numbers -> names; '' for -1 (not in a syscall), the number as text for calls not in the table."""
    n = nr.astype(np.int64)
    known = (n >= 0) & (n < syscalls.NR_MAX)
    out = lookup(syscalls.NAMES, np.where(known, n, 0))
    out = np.where(known, out, "")
    unnamed = (n >= 0) & ((~known) | (out == ""))
    if unnamed.any():
        out[unnamed] = [f"nr{v}" for v in n[unnamed].tolist()]
    return out.astype(object)


def _proc(r: np.ndarray, off: int) -> Columns:
    return {
        "ts": utc(r["ts_ns"], off), "start_ts": utc(r["start_ns"], off),
        "tgid": r["tgid"], "tid": r["tid"], "comm": decode_str(r["comm"]), "ppid": r["ppid"],
        "kind": lookup(PROC_KINDS, r["kind"]), "child_tgid": r["child_tgid"], "exit_code": r["exit_code"],
        "filename": decode_str(r["filename"]),
    }


def _fault(r: np.ndarray, off: int) -> Columns:
    return {
        "ts": utc(r["ts_ns"], off), "tgid": r["tgid"], "tid": r["tid"], "addr": r["addr"], "ip": r["ip"],
        "error_code": r["error_code"], "count": r["count"], "cpu": r["cpu"], "flushed": r["flushed"].astype(np.uint8),
    }


def _reclaim(r: np.ndarray, off: int) -> Columns:
    return {
        "ts": utc(r["start_ns"], off), "end_ts": utc(r["end_ns"], off),
        "dur_ns": (r["end_ns"] - r["start_ns"]).astype(np.uint64),
        "tgid": r["tgid"], "tid": r["tid"], "comm": decode_str(r["comm"]),
        "kind": lookup(RECLAIM_KINDS, r["kind"]), "nr_reclaimed": r["nr_reclaimed"],
        "cgroup_id": r["cgroup_id"], "cpu": r["cpu"],
    }


def _oom(r: np.ndarray, off: int) -> Columns:
    return {
        "ts": utc(r["ts_ns"], off), "victim_pid": r["victim_pid"], "killer_tgid": r["killer_tgid"],
        "killer_comm": decode_str(r["killer_comm"]), "total_vm_kb": r["total_vm_kb"], "anon_rss_kb": r["anon_rss_kb"],
    }


def _tcp_state(r: np.ndarray, off: int) -> Columns:
    return {
        "ts": utc(r["ts_ns"], off), "tgid": r["tgid"], "tid": r["tid"], "comm": decode_str(r["comm"]),
        "skaddr": r["skaddr"], "family": r["family"],
        "saddr": format_addr(r["saddr"], r["family"]), "sport": r["sport"],
        "daddr": format_addr(r["daddr"], r["family"]), "dport": r["dport"],
        "oldstate": lookup(TCP_STATES, r["oldstate"]), "newstate": lookup(TCP_STATES, r["newstate"]),
        "bytes_sent": r["bytes_sent"], "bytes_received": r["bytes_received"],
    }


def _sock_io(r: np.ndarray, off: int) -> Columns:
    return {
        "ts": utc(r["ts_ns"], off), "tgid": r["tgid"], "tid": r["tid"], "skaddr": r["skaddr"],
        "dir": lookup(SOCK_DIRS, r["dir"]), "bytes": r["bytes"], "srtt_us": r["srtt_us"],
        "protocol": r["protocol"], "family": r["family"],
        "saddr": format_addr(r["saddr"], r["family"]), "sport": r["sport"],
        "daddr": format_addr(r["daddr"], r["family"]), "dport": r["dport"],
    }


def _tcp_retrans(r: np.ndarray, off: int) -> Columns:
    return {
        "ts": utc(r["ts_ns"], off), "skaddr": r["skaddr"], "state": lookup(TCP_STATES, r["state"]),
        "srtt_us": r["srtt_us"], "family": r["family"],
        "saddr": format_addr(r["saddr"], r["family"]), "sport": r["sport"],
        "daddr": format_addr(r["daddr"], r["family"]), "dport": r["dport"],
    }


def _syscall(r: np.ndarray, off: int) -> Columns:
    nr = np.clip(r["nr"].astype(np.int64), 0, syscalls.NR_MAX - 1)
    ret = r["ret"]
    fd = np.where(syscalls.ARG0_IS_FD[nr], r["arg0"].astype(np.int64), -1).astype(np.int32)
    nbytes = np.where(syscalls.RETURNS_BYTES[nr] & (ret > 0), ret, 0).astype(np.uint64)
    return {
        "ts": utc(r["enter_ns"], off), "end_ts": utc(r["exit_ns"], off),
        "dur_ns": (r["exit_ns"] - r["enter_ns"]).astype(np.uint64),
        "tgid": r["tgid"], "tid": r["tid"], "syscall": syscalls.NAMES[nr], "nr": r["nr"],
        "fd": fd, "bytes": nbytes, "ret": ret,
        "arg0": r["arg0"], "arg1": r["arg1"], "arg2": r["arg2"], "cpu": r["cpu"], "dev": r["dev"],
    }


def _fd_open(r: np.ndarray, off: int) -> Columns:
    return {
        "ts": utc(r["ts_ns"], off), "tgid": r["tgid"], "tid": r["tid"], "fd": r["fd"], "flags": r["flags"],
        "path": decode_str(r["path"]),
    }


def _block_io(r: np.ndarray, off: int) -> Columns:
    return {
        "ts": utc(r["issue_ns"], off), "end_ts": utc(r["done_ns"], off),
        "dur_ns": (r["done_ns"] - r["issue_ns"]).astype(np.uint64),
        "tgid": r["tgid"], "tid": r["tid"], "comm": decode_str(r["comm"]), "dev": r["dev"],
        "sector": r["sector"], "bytes": r["bytes"], "rwbs": decode_str(r["rwbs"]), "error": r["error"],
        # 1: one request; more: a submitter's fast requests summed over ~1 s (ts..end_ts spans them)
        "requests": r["requests"], "busy_ns": r["busy_ns"], "max_ns": r["max_ns"],
    }


@dataclass(frozen=True)
class EventType:
    name: str          # table name and Kafka topic suffix
    type_id: int       # index in the kernel's per-CPU drop counters
    probe: str         # probes/<probe>.bpf.c
    ring: str          # ring buffer map name in that object
    record: np.dtype
    convert: Callable[[np.ndarray, int], Columns]
    order_by: tuple[str, ...]

    def columns(self, records: np.ndarray, clock_offset_ns: int) -> Columns:
        return self.convert(records, clock_offset_ns)

    def empty(self) -> Columns:
        return self.convert(np.empty(0, dtype=self.record), 0)


EVENT_TYPES: tuple[EventType, ...] = (
    EventType("offcpu", L.KP_EV_OFFCPU, "sched", "rb_offcpu", L.KP_OFFCPU, _offcpu, ("tgid", "tid", "ts")),
    EventType("proc", L.KP_EV_PROC, "sched", "rb_proc", L.KP_PROC, _proc, ("tgid", "ts")),
    EventType("fault", L.KP_EV_FAULT, "memory", "rb_fault", L.KP_FAULT, _fault, ("tgid", "tid", "ts")),
    EventType("reclaim", L.KP_EV_RECLAIM, "memory", "rb_reclaim", L.KP_RECLAIM, _reclaim, ("ts",)),
    EventType("oom", L.KP_EV_OOM, "memory", "rb_oom", L.KP_OOM, _oom, ("ts",)),
    EventType("tcp_state", L.KP_EV_TCP_STATE, "net", "rb_tcp_state", L.KP_TCP_STATE, _tcp_state, ("ts",)),
    EventType("sock_io", L.KP_EV_SOCK_IO, "net", "rb_sock_io", L.KP_SOCK_IO, _sock_io, ("tgid", "tid", "ts")),
    EventType("tcp_retrans", L.KP_EV_TCP_RETRANS, "net", "rb_tcp_retrans", L.KP_TCP_RETRANS, _tcp_retrans, ("ts",)),
    EventType("syscall", L.KP_EV_SYSCALL, "syscalls", "rb_syscall", L.KP_SYSCALL, _syscall, ("tgid", "tid", "ts")),
    EventType("fd_open", L.KP_EV_FD_OPEN, "syscalls", "rb_fd_open", L.KP_FD_OPEN, _fd_open, ("tgid", "ts")),
    EventType("block_io", L.KP_EV_BLOCK_IO, "blockio", "rb_block_io", L.KP_BLOCK_IO, _block_io, ("ts",)),
)

BY_NAME = {e.name: e for e in EVENT_TYPES}

# Columns added to a table after its first release: a batch encoded before them (an agent not yet
# upgraded, an archived topic replayed) is still valid, and stores read the type's default for them.
COLUMNS_ADDED_LATER: dict[str, frozenset[str]] = {
    "offcpu": frozenset({"displaced_tgid", "displaced_tid", "displaced_comm", "displaced_since",
                         "preemptor_process", "waker_process", "displaced_process",
                         "syscall", "fd", "skaddr", "saddr", "sport", "daddr", "dport", "short_n", "short_ns",
                         "dev", "ino"}),
    "tcp_state": frozenset({"bytes_sent", "bytes_received"}),
    "block_io": frozenset({"requests", "busy_ns", "max_ns"}),
}
for _et in EVENT_TYPES:   # pod identity, appended to every event row's enrichment
    COLUMNS_ADDED_LATER[_et.name] = COLUMNS_ADDED_LATER.get(_et.name, frozenset()) | {"namespace", "pod"}
COLUMNS_ADDED_LATER["processes"] = frozenset({"runtime", "pod_uid", "qos", "namespace", "pod", "container",
                                              "workload", "workload_kind", "labels"})
PROBES = tuple(dict.fromkeys(e.probe for e in EVENT_TYPES))  # load order: sched first owns the shared maps


def clickhouse_type(name: str, values: np.ndarray) -> str:
    """Full (modern) ClickHouse type of a column; sinks adapt it to older servers."""
    if values.dtype == object:
        return "LowCardinality(String)" if name in LOW_CARDINALITY else "String"
    return {
        "u1": "UInt8", "u2": "UInt16", "u4": "UInt32", "u8": "UInt64",
        "i1": "Int8", "i2": "Int16", "i4": "Int32", "i8": "Int64",
    }[values.dtype.str[1:]]


# Columns every event row gets from the agent's enrichment, after the type's own.
# namespace and pod: the process's Kubernetes pod (agent/pod_identity.py), '' outside one or unnamed.
ENRICH_COLUMNS: tuple[tuple[str, str], ...] = (
    ("host", "LowCardinality(String)"), ("service", "LowCardinality(String)"),
    ("namespace", "LowCardinality(String)"), ("pod", "LowCardinality(String)"),
)


def table_columns(et: EventType) -> list[tuple[str, str]]:
    cols = [(k, clickhouse_type(k, v)) for k, v in et.empty().items()]
    return cols + list(ENRICH_COLUMNS)
