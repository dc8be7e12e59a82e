"""Benchmark: recorder batch -> chDB rows/s through the project's own store path.

Why: the embedded recorder has one writer thread; if conversion + insert of a
batch is slower than the kernel produces events, its queue fills, draining
slows and the rings drop. So the store path's rows/s bounds the event rate
one host can keep. Goal to report against: >= 2M rows/s insert.

What is timed, per batch, exactly as ``Recorder._write_batch`` does it:

* convert: ``BY_NAME[t].columns(records, 0)`` (vectorised numpy + ``decode_str``)
  plus the enrichment columns ``host`` (one str object repeated, ``constant_column``) and ``service``
  (``IdentityCache.services``, pre-populated so /proc is never read);
* insert: ``ChdbStore.write(t, columns)``, i.e. ``ChdbStore.arrow`` (LowCardinality
  strings as dictionary arrays) + ``INSERT ... FROM Python(tbl)``; ``ChdbStore.arrow`` is
  also timed alone on the same columns so the table can split insert into arrow
  conversion and chDB proper;
* combined: convert + insert, the writer thread's cost per row.

Records are synthetic but shaped like a busy trading host: a few hundred
threads in ~40 processes with realistic comms, a skewed (Zipf-like) thread
mix, monotonic timestamps, a syscall mix dominated by socket I/O, futex and
epoll, off-CPU intervals with wakers and preemptors. Each (table, batch size)
gets a fresh store in a temporary directory.

``--floor`` measures the engine alone, for the same rows: one batch is put in a Memory table,
then copied into the MergeTree table (and into a Null table) with ``INSERT ... SELECT``, no
Python or Arrow in the timed step. That copy is the fastest any caller can insert these rows
with this chDB on this host, so it is the floor to read the goal against; chDB's threads run
inside this process, so its CPU time is this process's CPU time.

``--profile`` adds a per-step breakdown of one 1M batch per table (which step
and which column dominate) and a what-if: the same string columns handed to
Arrow as dictionary arrays (codes + distinct values) instead of object arrays.

The 1000-row batch shows the fixed cost of one INSERT (ms/batch): the
recorder flushes every table that has events every --flush-ms (200 ms), so
that fixed cost, times tables, times 5/s, is a floor on the recorder's CPU.

Usage: python3 bench/chdb_ingest.py [--tables syscall offcpu] [--batches 1000 100000 1000000]
       [--rows-per-size 3000000] [--max-batches 30] [--profile] [--floor] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from kprobe.agent.identity import Identity, IdentityCache
from kprobe.agent.recorder import constant_column
from kprobe.schemas import layouts as L
from kprobe.schemas import syscalls
from kprobe.schemas.tables import BY_NAME, Columns, decode_str
from kprobe.sinks.chdb_store import ChdbStore, to_arrow

GOAL_ROWS_S = 2_000_000
HOST = "trade-gw-01.prod.example"
BASE_NS = 5_000_000_000_000  # a monotonic clock reading ~83 min after boot

# Process name stems of a trading host; each process gets several threads.
PROCESS_STEMS = (
    "java", "order-gw", "risk-engine", "md-feed", "settlement-svc", "fix-acceptor", "kafka-net",
    "postgres", "redis-server", "envoy", "chronyd", "node_exporter", "sshd", "systemd-journal",
    "containerd", "kubelet", "python3", "ledger-writer", "pricer", "nginx",
)
THREAD_STEMS = ("worker", "io", "netty-epoll", "C2 CompilerThre", "GC Thread#", "pool-1-thread-", "main")

# (syscall name, weight): socket I/O, futex and epoll dominate a busy service.
SYSCALL_MIX = (
    ("recvfrom", 18), ("sendto", 14), ("read", 12), ("write", 10), ("futex", 16), ("epoll_wait", 12),
    ("epoll_pwait", 4), ("sendmsg", 3), ("recvmsg", 3), ("writev", 2), ("pwrite64", 1), ("fdatasync", 1),
    ("openat", 1), ("close", 1), ("clock_nanosleep", 1), ("ppoll", 1),
)


# -- synthetic population and records --------------------------------------------------------------

@dataclass
class Population:
    """Threads of the synthetic host: tid -> tgid, comm; a skewed activity weight per thread."""

    tids: np.ndarray
    tgids: np.ndarray
    comms: np.ndarray  # S16, what the kernel would put in the record
    weights: np.ndarray
    services: dict[int, str]


def make_population(rng: np.random.Generator, n_procs: int = 40, n_threads: int = 320) -> Population:
    """A few hundred threads in ~40 processes, Zipf-ish so a few hot threads produce most events."""
    tgids = np.arange(n_procs, dtype=np.uint32) * 1000 + 2000
    owner = rng.integers(0, n_procs, n_threads)
    owner[:n_procs] = np.arange(n_procs)  # every process has at least its main thread
    tids = np.empty(n_threads, dtype=np.uint32)
    comms = np.empty(n_threads, dtype="S16")
    next_tid = {int(p): int(tgids[p]) for p in range(n_procs)}
    for i, p in enumerate(owner.tolist()):
        tids[i] = next_tid[p]
        next_tid[p] += 1
        stem = PROCESS_STEMS[p % len(PROCESS_STEMS)]
        name = stem if tids[i] == tgids[p] else f"{THREAD_STEMS[i % len(THREAD_STEMS)]}{i % 17}"
        comms[i] = name.encode()[:15]
    weights = 1.0 / np.arange(1, n_threads + 1) ** 0.9
    services = {int(t): f"{PROCESS_STEMS[i % len(PROCESS_STEMS)]}" for i, t in enumerate(tgids.tolist())}
    return Population(tids, tgids[owner], comms, weights / weights.sum(), services)


def _pick_threads(rng: np.random.Generator, pop: Population, n: int) -> np.ndarray:
    return rng.choice(len(pop.tids), size=n, p=pop.weights)


def _timeline(rng: np.random.Generator, n: int, mean_gap_ns: float) -> np.ndarray:
    return (BASE_NS + np.cumsum(rng.exponential(mean_gap_ns, n))).astype(np.uint64)


def make_syscall(rng: np.random.Generator, pop: Population, n: int) -> np.ndarray:
    """KP_SYSCALL records: ~1M syscalls/s host-wide, log-normal durations around 5 us."""
    r = np.zeros(n, dtype=L.KP_SYSCALL)
    who = _pick_threads(rng, pop, n)
    names, w = zip(*SYSCALL_MIX, strict=True)
    nrs = np.array([syscalls.X86_64[s][0] for s in names], dtype=np.uint32)
    nr = nrs[rng.choice(len(nrs), size=n, p=np.array(w) / sum(w))]
    enter = _timeline(rng, n, 1000.0)
    dur = rng.lognormal(np.log(5000.0), 1.2, n).astype(np.uint64)
    r["enter_ns"], r["exit_ns"] = enter, enter + dur
    returns_bytes = syscalls.RETURNS_BYTES[nr]
    r["ret"] = np.where(returns_bytes, rng.integers(-11, 4096, n), rng.integers(-1, 1, n))
    r["arg0"] = rng.integers(3, 256, n)
    r["arg1"] = rng.integers(0x7F00_0000_0000, 0x7FFF_FFFF_0000, n, dtype=np.uint64)
    r["arg2"] = rng.integers(1, 65536, n)
    r["tgid"], r["tid"], r["nr"] = pop.tgids[who], pop.tids[who], nr
    r["cpu"] = rng.integers(0, 2, n)
    return r


def make_offcpu(rng: np.random.Generator, pop: Population, n: int) -> np.ndarray:
    """KP_OFFCPU records: mostly sleeps woken by another thread, some preemptions, all >= 50 us."""
    r = np.zeros(n, dtype=L.KP_OFFCPU)
    who = _pick_threads(rng, pop, n)
    off = _timeline(rng, n, 2000.0)
    blocked = rng.lognormal(np.log(200_000.0), 1.5, n).astype(np.uint64) + 50_000
    runq = rng.lognormal(np.log(8_000.0), 1.0, n).astype(np.uint64)
    reason = rng.choice(np.array([1, 2, 3, 4], dtype=np.uint32), size=n, p=[0.15, 0.7, 0.1, 0.05])
    preempted = reason == L.KP_OFF_PREEMPTED
    wake = np.where(preempted, 0, off + blocked).astype(np.uint64)
    r["off_ns"], r["wake_ns"] = off, wake
    r["on_ns"] = np.where(preempted, off + blocked, wake) + runq
    r["tgid"], r["tid"], r["comm"] = pop.tgids[who], pop.tids[who], pop.comms[who]
    r["cpu_off"], r["cpu_on"] = rng.integers(0, 2, n), rng.integers(0, 2, n)
    r["prev_state"] = np.where(preempted, 0, np.where(reason == L.KP_OFF_UNINTERRUPTIBLE, 2, 1))
    r["reason"] = reason
    other = _pick_threads(rng, pop, n)
    r["preemptor_tgid"] = np.where(preempted, pop.tgids[other], 0)
    r["preemptor_tid"] = np.where(preempted, pop.tids[other], 0)
    r["preemptor_comm"] = np.where(preempted, pop.comms[other], b"")
    r["waker_tgid"] = np.where(preempted, 0, pop.tgids[other])
    r["waker_tid"] = np.where(preempted, 0, pop.tids[other])
    r["waker_comm"] = np.where(preempted, b"", pop.comms[other])
    return r


GENERATORS: dict[str, Callable[[np.random.Generator, Population, int], np.ndarray]] = {
    "syscall": make_syscall,
    "offcpu": make_offcpu,
}


# -- the recorder's path ---------------------------------------------------------------------------

def identity_cache(pop: Population) -> IdentityCache:
    """Pre-populated so ``services()`` costs what it costs in steady state: no /proc reads."""
    known = {t: Identity(t, s, service=s) for t, s in pop.services.items()}
    return IdentityCache(proc=Path("/nonexistent"), known=known)


def convert(table: str, records: np.ndarray, ids: IdentityCache) -> Columns:
    """``Recorder._write_batch`` up to the sink call: type columns, then host and service."""
    cols = BY_NAME[table].columns(records, 0)
    tg = cols.get("tgid", cols.get("victim_pid"))
    cols["host"] = constant_column(len(records), HOST)
    cols["service"] = ids.services(tg) if tg is not None else constant_column(len(records), "")
    return cols


@dataclass
class Run:
    table: str
    batch_rows: int
    batches: int
    convert_s: list[float] = field(default_factory=list)
    arrow_s: list[float] = field(default_factory=list)
    write_s: list[float] = field(default_factory=list)
    stored_rows: int = 0

    def rate(self, seconds: list[float]) -> float:
        return self.batch_rows * len(seconds) / sum(seconds)

    def summary(self) -> dict:
        combined = [c + w for c, w in zip(self.convert_s, self.write_s, strict=True)]
        chdb = [max(w - a, 1e-9) for w, a in zip(self.write_s, self.arrow_s, strict=True)]
        return {
            "table": self.table, "batch_rows": self.batch_rows, "batches": self.batches,
            "stored_rows": self.stored_rows,
            "convert_rows_s": self.rate(self.convert_s),
            "insert_rows_s": self.rate(self.write_s),
            "to_arrow_rows_s": self.rate(self.arrow_s),
            "chdb_insert_rows_s": self.rate(chdb),
            "combined_rows_s": self.rate(combined),
            "median_batch_ms": {
                "convert": 1e3 * statistics.median(self.convert_s),
                "to_arrow": 1e3 * statistics.median(self.arrow_s),
                "insert": 1e3 * statistics.median(self.write_s),
            },
        }


def measure(table: str, batch_rows: int, batches: int, pop: Population, workdir: Path, seed: int) -> Run:
    """Fresh store; a small warm-up insert; then ``batches`` timed batches of fresh records."""
    rng = np.random.default_rng(seed)
    ids = identity_cache(pop)
    store = ChdbStore(workdir / f"{table}-{batch_rows}")
    run = Run(table, batch_rows, batches)
    try:
        store.write(table, convert(table, GENERATORS[table](rng, pop, 10_000), ids))
        for _ in range(batches):
            records = GENERATORS[table](rng, pop, batch_rows)
            t0 = time.perf_counter()
            cols = convert(table, records, ids)
            t1 = time.perf_counter()
            store.arrow(table, cols)
            t2 = time.perf_counter()
            n = store.write(table, cols)
            t3 = time.perf_counter()
            if n != batch_rows:
                raise RuntimeError(f"{table}: store.write returned {n} for {batch_rows} rows")
            run.convert_s.append(t1 - t0)
            run.arrow_s.append(t2 - t1)
            run.write_s.append(t3 - t2)
        run.stored_rows = int(store.query_rows(f"SELECT count() AS n FROM {table}")[0]["n"]) - 10_000
    finally:
        store.close()
    if run.stored_rows != batch_rows * batches:
        raise RuntimeError(f"{table}: stored {run.stored_rows} rows, expected {batch_rows * batches}")
    return run


# -- profile: which step and which column dominate -------------------------------------------------

def _timed(fn: Callable[[], object], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _dict_arrow(cols: Columns) -> pa.Table:
    """What-if: string columns as Arrow dictionary arrays (codes + distinct values), numerics as is.

    Built here from the object arrays with np.unique, which the converters already do
    internally (decode_str), so the unique step is excluded from the timing below.
    """
    arrays = {}
    for name, values in cols.items():
        if values.dtype == object:
            uniq, codes = np.unique(values, return_inverse=True)
            arrays[name] = pa.DictionaryArray.from_arrays(codes.astype(np.int32), pa.array(uniq, type=pa.string()))
        else:
            arrays[name] = pa.array(np.ascontiguousarray(values))
    return pa.table(arrays)


def profile_table(table: str, pop: Population, workdir: Path, rows: int, seed: int) -> dict:
    """Best-of-3 timings of every step of one batch, per string column, plus the dictionary what-if."""
    rng = np.random.default_rng(seed)
    ids = identity_cache(pop)
    records = GENERATORS[table](rng, pop, rows)
    et = BY_NAME[table]
    cols = convert(table, records, ids)
    steps: dict[str, float] = {"columns() total": _timed(lambda: et.columns(records, 0))}
    for f in records.dtype.names or ():
        if records.dtype[f].kind == "S":
            steps[f"  decode_str({f})"] = _timed(lambda f=f: decode_str(records[f]))
    steps["host constant_column"] = _timed(lambda: constant_column(rows, HOST))
    steps["service services()"] = _timed(lambda: ids.services(cols["tgid"]))
    steps["to_arrow total, plain strings"] = _timed(lambda: to_arrow(cols))
    obj = [k for k, v in cols.items() if v.dtype == object]
    for k in obj:
        steps[f"  pa.array(str {k})"] = _timed(lambda k=k: pa.array(cols[k], type=pa.string()))
    num = {k: v for k, v in cols.items() if v.dtype != object}
    steps[f"  pa.array({len(num)} numeric cols)"] = _timed(
        lambda: [pa.array(np.ascontiguousarray(v)) for v in num.values()])
    dict_tbl = _dict_arrow(cols)
    steps["what-if: dict arrays from codes"] = _timed(lambda: _dict_arrow_from_codes(dict_tbl, num))
    store = ChdbStore(workdir / f"profile-{table}")
    try:
        store.write(table, convert(table, GENERATORS[table](rng, pop, 10_000), ids))
        steps["store.write (to_arrow + INSERT)"] = _timed(lambda: store.write(table, cols))
        steps["  store.arrow (dictionary LowCardinality)"] = _timed(lambda: store.arrow(table, cols))
        prebuilt = store.arrow(table, cols)
        steps["chDB INSERT of the store's prebuilt table"] = _timed(lambda: _insert_table(store, table, prebuilt))
        steps["what-if: chDB INSERT of dict table"] = _timed(lambda: _insert_table(store, table, dict_tbl))
    finally:
        store.close()
    return {"table": table, "rows": rows, "seconds": steps}


def _dict_arrow_from_codes(dict_tbl: pa.Table, num: Columns) -> pa.Table:
    """Rebuild the dictionary table from codes + distinct values, as a converter could emit them."""
    arrays = {}
    for name in dict_tbl.column_names:
        if name in num:
            arrays[name] = pa.array(np.ascontiguousarray(num[name]))
        else:
            chunk = dict_tbl.column(name).chunk(0)
            arrays[name] = pa.DictionaryArray.from_arrays(chunk.indices, chunk.dictionary)
    return pa.table(arrays)


def engine_floor(table: str, pop: Population, workdir: Path, rows: int, seed: int, repeat: int = 5) -> dict:
    """chDB's own MergeTree write of one batch, fed from a Memory table: wall and CPU per batch."""
    rng = np.random.default_rng(seed)
    cols = convert(table, GENERATORS[table](rng, pop, rows), identity_cache(pop))
    store = ChdbStore(workdir / f"floor-{table}")
    try:
        schema = store.query_rows(
            f"SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = '{table}' "
            "ORDER BY position")
        col_sql = ", ".join(f"`{c['name']}` {c['type']}" for c in schema)
        for engine in ("Memory", "Null"):
            store.query(f"CREATE TABLE floor_{engine.lower()} ({col_sql}) ENGINE = {engine}")
        _insert_table(store, "floor_memory", store.arrow(table, cols))
        result: dict = {"table": table, "rows": rows}
        for target in (table, "floor_null"):
            wall, cpu = [], []
            for _ in range(repeat):
                c0, t0 = os.times(), time.perf_counter()
                store.query(f"INSERT INTO {target} SELECT * FROM floor_memory")
                t1, c1 = time.perf_counter(), os.times()
                wall.append(t1 - t0)
                cpu.append((c1.user - c0.user) + (c1.system - c0.system))
            result[target if target != table else "mergetree"] = {
                "rows_s": rows / statistics.median(wall), "median_wall_ms": 1e3 * statistics.median(wall),
                "median_cpu_ms": 1e3 * statistics.median(cpu)}
        part = store.query_rows(
            f"SELECT sum(data_uncompressed_bytes) AS u, sum(rows) AS r FROM system.parts "
            f"WHERE active AND database = currentDatabase() AND table = '{table}'")[0]
        result["uncompressed_bytes_per_row"] = int(part["u"]) / max(int(part["r"]), 1)
        return result
    finally:
        store.close()


def _insert_table(store: ChdbStore, table: str, tbl: pa.Table) -> None:
    """chDB's INSERT alone, on an Arrow table that is already built (bench-only use of the session)."""
    with store._lock:
        store._session.query(f"INSERT INTO {table} SELECT * FROM Python(tbl)")


# -- output ----------------------------------------------------------------------------------------

def _fmt_rate(x: float) -> str:
    return f"{x / 1e6:7.2f}M"


def print_table(results: list[dict]) -> None:
    print(f"chDB ingest through ChdbStore.write (goal: insert >= {GOAL_ROWS_S / 1e6:.0f}M rows/s)")
    print(f"{'table':<8} {'batch':>9} {'n':>3} | {'convert':>8} {'insert':>8} {'combined':>9} | "
          f"{'to_arrow':>8} {'chDB':>8} | {'ms/batch conv/arrow/ins':>24} | goal")
    for r in results:
        ms = r["median_batch_ms"]
        ok = "ok" if r["insert_rows_s"] >= GOAL_ROWS_S else "MISSED"
        print(f"{r['table']:<8} {r['batch_rows']:>9} {r['batches']:>3} | {_fmt_rate(r['convert_rows_s']):>8} "
              f"{_fmt_rate(r['insert_rows_s']):>8} {_fmt_rate(r['combined_rows_s']):>9} | "
              f"{_fmt_rate(r['to_arrow_rows_s']):>8} {_fmt_rate(r['chdb_insert_rows_s']):>8} | "
              f"{ms['convert']:7.1f} /{ms['to_arrow']:6.1f} /{ms['insert']:7.1f} | {ok} "
              f"(combined {'ok' if r['combined_rows_s'] >= GOAL_ROWS_S else 'below'})")
    print("rates are rows/s; insert = store.write = to_arrow + chDB INSERT; chDB = insert - to_arrow (estimate)")


def print_profile(prof: dict) -> None:
    rows = prof["rows"]
    print(f"\nprofile: {prof['table']}, one batch of {rows} rows, best of 3")
    for step, s in prof["seconds"].items():
        print(f"  {step:<40} {s * 1e3:8.1f} ms  {rows / s / 1e6:8.2f}M rows/s")


def print_floor(f: dict) -> None:
    mt, null = f["mergetree"], f["floor_null"]
    ok = "the goal is above it" if mt["rows_s"] < GOAL_ROWS_S else "the goal is below it"
    print(f"\nengine floor: {f['table']}, {f['rows']} rows ({f['uncompressed_bytes_per_row']:.0f} B/row uncompressed) "
          f"copied Memory -> table, no Python in the step")
    print(f"  MergeTree {_fmt_rate(mt['rows_s'])} rows/s, {mt['median_wall_ms']:.0f} ms wall, "
          f"{mt['median_cpu_ms']:.0f} ms CPU per batch ({ok})")
    print(f"  Null      {_fmt_rate(null['rows_s'])} rows/s, {null['median_wall_ms']:.0f} ms wall, "
          f"{null['median_cpu_ms']:.0f} ms CPU per batch (reading the rows, writing nothing)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tables", nargs="+", default=list(GENERATORS), choices=list(GENERATORS))
    ap.add_argument("--batches", nargs="+", type=int, default=[1_000, 100_000, 1_000_000], metavar="ROWS",
                    help="batch sizes; 1000 shows the fixed cost per INSERT (default: %(default)s)")
    ap.add_argument("--rows-per-size", type=int, default=3_000_000, help="rows timed per batch size (default: %(default)s)")
    ap.add_argument("--max-batches", type=int, default=30, help="cap on timed batches per size (default: %(default)s)")
    ap.add_argument("--profile", action="store_true", help="per-step and per-column breakdown of a 1M batch")
    ap.add_argument("--floor", action="store_true",
                    help="also time chDB's own MergeTree write of one batch (Memory -> MergeTree), the floor")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args(argv)
    pop = make_population(np.random.default_rng(args.seed))
    results, profiles, floors = [], [], []
    with tempfile.TemporaryDirectory(prefix="kprobe-bench-chdb-") as tmp:
        for table in args.tables:
            for batch in args.batches:
                n = min(max(3, args.rows_per_size // batch), args.max_batches)
                results.append(measure(table, batch, n, pop, Path(tmp), args.seed).summary())
            if args.profile:
                profiles.append(profile_table(table, pop, Path(tmp), 1_000_000, args.seed))
            if args.floor:
                floors.append(engine_floor(table, pop, Path(tmp), 1_000_000, args.seed))
    meta = {"cpus": os.cpu_count(), "loadavg_at_end": os.getloadavg(), "goal_rows_s": GOAL_ROWS_S, "threads": len(pop.tids),
            "processes": len(set(pop.tgids.tolist()))}
    if args.json:
        json.dump({"meta": meta, "results": results, "profiles": profiles, "floors": floors}, sys.stdout, indent=1)
        print()
    else:
        print(f"host: {meta['cpus']} CPUs, load average at end {meta['loadavg_at_end'][0]:.2f} (shared host: noise)")
        print_table(results)
        for p in profiles:
            print_profile(p)
        for f in floors:
            print_floor(f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
