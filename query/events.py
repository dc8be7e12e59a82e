"""`kprobe events`: recorded events of every type, filtered, merged in time order."""

from __future__ import annotations

from dataclasses import dataclass

from kprobe.query.timefmt import format_dur, format_ts
from kprobe.schemas.tables import BY_NAME, EVENT_TYPES


@dataclass
class EventQuery:
    pid: int | None = None
    types: list[str] | None = None
    from_ns: int | None = None
    to_ns: int | None = None
    limit: int = 1000

    def sql_for(self, table: str) -> str:
        cols = {c for c, _ in _columns(table)}
        where = []
        if self.pid is not None:
            pid_cols = [c for c in ("tgid", "tid", "victim_pid") if c in cols]
            if not pid_cols:
                return ""
            where.append("(" + " OR ".join(f"{c} = {int(self.pid)}" for c in pid_cols) + ")")
        if self.from_ns is not None:
            end = "end_ts" if "end_ts" in cols else "ts"
            where.append(f"{end} >= {int(self.from_ns)}")
        if self.to_ns is not None:
            where.append(f"ts <= {int(self.to_ns)}")
        cond = (" WHERE " + " AND ".join(where)) if where else ""
        return f"SELECT '{table}' AS type, * FROM {table}{cond} ORDER BY ts LIMIT {int(self.limit)}"

    def tables(self) -> list[str]:
        if not self.types:
            return [e.name for e in EVENT_TYPES]
        unknown = [t for t in self.types if t not in BY_NAME]
        if unknown:
            raise ValueError(f"unknown event type(s): {', '.join(unknown)}; known: {', '.join(BY_NAME)}")
        return list(self.types)


def _columns(table: str) -> list[tuple[str, str]]:
    from kprobe.schemas.tables import table_columns

    return table_columns(BY_NAME[table])


def fetch(store, q: EventQuery) -> list[dict]:
    rows: list[dict] = []
    for table in q.tables():
        sql = q.sql_for(table)
        if sql:
            rows.extend(store.query_rows(sql))
    rows.sort(key=lambda r: int(r["ts"]))
    return rows[: q.limit]


def _task(r: dict, role: str) -> str:
    """``comm tgid/tid`` of the preemptor, waker or displaced task, with its process's name when a
    renamed thread hides it (``risk-w2 (risk-recalc) 1454/1540``)."""
    comm, process = r[f"{role}_comm"], r.get(f"{role}_process") or ""
    name = f"{comm} ({process})" if process and process != comm else comm
    return f"{name} {r[f'{role}_tgid']}/{r[f'{role}_tid']}"


def summary(r: dict) -> str:
    t = r["type"]
    who = f"{r.get('comm') or r.get('service', '')} {r.get('tgid', '')}/{r.get('tid', '')}".strip()
    if r.get("pod"):  # the process's Kubernetes pod (agent/pod_identity.py)
        who += f" [pod {r.get('namespace', '')}/{r['pod']}]"
    if t == "offcpu":
        extra = ""
        if r["reason"] == "preempted":
            extra = f" by {_task(r, 'preemptor')}"
        elif r["waker_tid"]:
            extra = f", woken by {_task(r, 'waker')}"
        runq = f" (run-queue {format_dur(r['runq_ns'])}"
        if int(r.get("displaced_tid") or 0) and int(r["runq_ns"]):
            runq += f", got CPU {r['cpu_on']} from {_task(r, 'displaced')}"
            since = int(r.get("displaced_since") or 0)
            if since and int(r["end_ts"]) > since:
                runq += f" after its {format_dur(int(r['end_ts']) - since)} on it"
        return f"{who} off-CPU {format_dur(r['dur_ns'])} {r['reason']} on CPU {r['cpu_off']}{extra}{runq})"
    if t == "syscall":
        fd = f" fd={r['fd']}" if int(r["fd"]) >= 0 else ""
        nbytes = f" {r['bytes']} B" if int(r["bytes"]) else ""
        return f"{who} {r['syscall']}{fd}{nbytes} ret={r['ret']} {format_dur(r['dur_ns'])}"
    if t == "proc":
        return f"{who} {r['kind']} {r['filename'] or ''} {('child ' + str(r['child_tgid'])) if r['child_tgid'] else ''}".rstrip()
    if t == "fault":
        return f"{who} {r['count']} page fault(s), last at {int(r['addr']):#x}"
    if t == "reclaim":
        return f"{who} {r['kind']} reclaim stall {format_dur(r['dur_ns'])}, {r['nr_reclaimed']} pages"
    if t == "oom":
        return f"OOM kill of pid {r['victim_pid']} (by {r['killer_comm']} {r['killer_tgid']})"
    if t in ("tcp_state", "sock_io", "tcp_retrans"):
        conn = f"{r['saddr']}:{r['sport']}→{r['daddr']}:{r['dport']}"
        if t == "tcp_state":
            return f"{who} tcp {conn} {r['oldstate']}→{r['newstate']}"
        if t == "sock_io":
            return f"{who} {r['dir']} {r['bytes']} B {conn} srtt {r['srtt_us']} µs"
        return f"tcp retransmit {conn} ({r['state']})"
    if t == "fd_open":
        return f"{who} open fd={r['fd']} {r['path']}"
    if t == "block_io":
        n = int(r.get("requests") or 1)
        if n > 1:  # fast requests summed in the kernel over ~1 s (kprobe record --min-block-us)
            return (f"{who} block {r['rwbs']} {n} requests {r['bytes']} B dev {r['dev']} busy "
                    f"{format_dur(r['busy_ns'])} (longest {format_dur(r['max_ns'])}) over {format_dur(r['dur_ns'])}")
        return f"{who} block {r['rwbs']} {r['bytes']} B dev {r['dev']} {format_dur(r['dur_ns'])}"
    return str(r)


def format_row(r: dict) -> str:
    return f"{format_ts(r['ts'])}  {r['type']:<11} {summary(r)}"
