"""`kprobe stats`: what is stored, what was lost and where, what attached, which clock."""

from __future__ import annotations

import json
from pathlib import Path

from kprobe.agent.capabilities import RELEVANT
from kprobe.query.timefmt import format_ts
from kprobe.schemas.tables import EVENT_TYPES

OTEL_STATUS = "otel.json"  # written by kprobe.embedded at the end of a session


def collect(store, data_dir: Path) -> dict:
    live = hasattr(store, "live_stats")
    if live:
        recorder = store.live_stats()
        otel = recorder.pop("otel", None)
    else:
        path = data_dir / "status.json"
        recorder = json.loads(path.read_text()) if path.exists() else {}
        otel_path = data_dir / OTEL_STATUS
        otel = json.loads(otel_path.read_text()) if otel_path.exists() else None
    counts = {}
    if "kafka" in recorder:  # scale-out recorder: no local store, rows went to Kafka/ClickHouse
        counts = {et.name: recorder.get("written", {}).get(et.name, 0) for et in EVENT_TYPES}
    else:
        for name in [et.name for et in EVENT_TYPES] + ["spans"]:
            rows = store.query_rows(f"SELECT count() AS n FROM {name}")
            counts[name] = int(rows[0]["n"]) if rows else 0
    flows = [json.loads(f.read_text()) for f in sorted((data_dir / "dataflow").glob("ingest-*.json"))]
    from kprobe.protocols.status import load as payload_status
    from kprobe.replay.status import load as replay_status

    return {"stored": counts, "recording": live, "recorder": recorder, "otel": otel, "dataflows": flows,
            "payloads": payload_status(data_dir), "replay": replay_status(data_dir)}


def render_kafka(k: dict) -> list[str]:
    """The Kafka sink's delivery accounting (scale-out mode)."""
    lines = ["", f"kafka {k['brokers']}: mode {k['mode']}",
             f"  accepted {k['accepted_rows']} = delivered {k['delivered_rows']} + in flight {k['in_flight_rows']}"
             f" + spooled {k['spool_rows']} + dropped {k['dropped_total']}",
             f"  spool: {k['spool_messages']} messages, {k['spool_bytes']} bytes; resent from spool "
             f"{k['resent_rows']} rows"]
    if k.get("unconfirmed_rows"):
        lines.append(f"  acknowledged without an offset, sent again: {k['unconfirmed_rows']} rows")
    if k.get("spool_quarantined_files") or k.get("spool_io_errors"):
        lines.append(f"  spool: {k.get('spool_quarantined_files', 0)} corrupt or unsendable files quarantined "
                     f"(DATA/spool/quarantine), {k.get('spool_io_errors', 0)} writes refused by the disk")
    for reason, n in k.get("dropped", {}).items():
        lines.append(f"  dropped ({reason}): {n}")
    return lines


def render_dataflows(flows: list[dict]) -> str:
    """Counters of running (or last run) dataflow processes, from their status files."""
    lines = []
    for f in flows:
        rows = sum(f.get("rows_written", {}).values())
        lines.append(f"dataflow {f['flow']} pid {f['pid']}: {rows} rows stored, {f['duplicate_rows']} duplicate rows "
                     f"skipped, {f['dlq_messages']} to DLQ, consumer lag {f['lag_total']} messages, "
                     f"freshness {f['freshness_s']:.2f} s, sink errors {f['sink_errors']}")
        for t, n in sorted(f.get("rows_written", {}).items()):
            lines.append(f"  {t:<12} {n:>12}")
        if f.get("last_error"):
            lines.append(f"  last error: {f['last_error']}")
    return "\n".join(lines)


def render_host(host: dict) -> list[str]:
    """Which machine and boot, and whether this host's wall-clock times can be set beside another's."""
    if not host:
        return []
    line = f"host: {host.get('hostname', '?')}, machine id {host.get('host_id') or 'none'}, boot {host.get('boot_id', '?')}"
    if host.get("key"):
        line = f"host {host['key']} ({line[6:]})"
    clock = host.get("clock") or {}
    return [line] + ([f"  {clock['describe']}"] if clock.get("describe") else [])


def render_capabilities(caps: dict) -> list[str]:
    """The recorder's capabilities and, per feature, the missing ones and what runs without them."""
    if not caps:
        return []
    held = caps.get("held", [])
    relevant = [c for c in RELEVANT if c in held]
    lines = ["", f"capabilities: {', '.join('CAP_' + c for c in relevant) or 'none of those kprobe uses'} "
                 f"({len(held)} held in all)"]
    for feat, missing in caps.get("missing", {}).items():
        lines.append(f"  missing {', '.join('CAP_' + c for c in missing)} for {feat}: {caps['degraded'][feat]}")
    return lines


def render_pod_identity(p: dict) -> list[str]:
    """Processes found in containers and pods (cgroup paths), named through the kubelet, its errors."""
    if not p:
        return []
    line = (f"pod identity: {p.get('processes_in_containers', 0)} processes in containers, "
            f"{p.get('processes_in_pods', 0)} in pods, {p.get('processes_named_by_kubelet', 0)} named by the kubelet")
    if "kubelet_fetches" in p:
        line += (f"; kubelet: {p['kubelet_fetches']} fetches, {p.get('kubelet_errors', 0)} failed, "
                 f"{p.get('kubelet_pods', 0)} pods listed, {p.get('pod_uids_unknown_to_kubelet', 0)} lookups of "
                 "pods it did not list")
    lines = ["", line]
    if p.get("kubelet_last_error"):
        lines.append(f"  kubelet last error: {p['kubelet_last_error'][:200]}")
    return lines


def render(data: dict) -> str:
    rec = data["recorder"]
    lines = []
    state = "recording now" if data["recording"] else "not recording"
    if rec.get("started_at_ns"):
        state += f" (last session started {format_ts(rec['started_at_ns'])}, pid {rec.get('pid')})"
    lines.append(f"kprobe: {state}")
    lines.append("")
    # scale-out mode: the rows went to Kafka (delivery is accounted below); only the dataflow stores them
    label = "sent to kafka" if rec.get("kafka") else "stored"
    lines.append(f"{'type':<12} {label:>13} {'kernel drops':>13} {'write errors':>13}")
    drops = rec.get("kernel_drops_total", {})
    errs = rec.get("write_errors", {})
    for name, n in data["stored"].items():
        lines.append(f"{name:<12} {n:>13} {drops.get(name, 0):>13} {errs.get(name, 0):>13}")
    lines.append(f"lost total: {rec.get('lost_total', 0)}")
    if rec.get("program_misses"):
        lines.append("program runs skipped by the kernel (nested on one CPU; counted in lost total): " +
                     ", ".join(f"{k}={v}" for k, v in sorted(rec["program_misses"].items())))
    if (ret := rec.get("retention")) and any(ret.get(k) for k in ("dropped", "trimmed")):
        lines.append(f"retention: {ret.get('dropped', 0)} partitions dropped ({ret.get('future_dropped', 0)} dated in "
                     f"the future), {ret.get('trimmed', 0)} trimmed; store {ret.get('bytes_before', 0) >> 20} MiB "
                     f"before the last pass, ~{ret.get('bytes_after_estimate', 0) >> 20} MiB after")
    if rec.get("rejected"):
        lines.append("rejected (impossible times or ids, not stored): " +
                     ", ".join(f"{k}={v}" for k, v in sorted(rec["rejected"].items())))
    if fn := rec.get("file_names"):
        lines.append(f"files of blocked calls named (no hook on open): {fn.get('by_path', 0)} by path, "
                     f"{fn.get('by_inode', 0)} by device and inode only")
    res = rec.get("resources")
    if res:
        lines.append(f"recorder: {res.get('cpu_pct', 0):.1f} % of a core over the last {res.get('window_s', 0):.0f} s, "
                     f"{res.get('rows_per_s', 0):.0f} rows/s, resident {res.get('rss_mb', 0):.0f} MB "
                     f"(heap {res.get('rss_anon_mb', 0):.0f} MB, mapped code and rings {res.get('rss_file_mb', 0):.0f} MB, "
                     f"shared {res.get('rss_shmem_mb', 0):.0f} MB, peak {res.get('rss_peak_mb', 0):.0f} MB"
                     + (f"; {rec['code_trimmed_mb']:.0f} MB of library code unmapped at the last trim"
                        if rec.get("code_trimmed_mb") else "") + ")")
        if mem := res.get("memory"):
            lines.append(f"  resident by kind ({mem.get('age_s', 0):.0f} s ago): engine code {mem.get('engine_code_mb', 0):.0f} MB, "
                         f"other libraries {mem.get('other_code_mb', 0):.0f} MB, data files {mem.get('data_files_mb', 0):.0f} MB, BPF rings {mem.get('rings_mb', 0):.0f} MB, "
                         f"malloc heap {mem.get('heap_mb', 0):.0f} MB, thread stacks {mem.get('stacks_mb', 0):.0f} MB, "
                         f"other anonymous (engine allocator, buffers) {mem.get('anon_other_mb', 0):.0f} MB; "
                         f"{mem.get('threads', 0):.0f} threads")
    if rec.get("kafka"):
        lines += render_kafka(rec["kafka"])
    if data.get("dataflows"):  # DATA/dataflow is the default --state-dir of `kprobe dataflow ingest`
        lines += ["", render_dataflows(data["dataflows"])]
    per_cpu = {k: v for k, v in rec.get("kernel_drops", {}).items() if sum(v)}
    for name, v in per_cpu.items():
        lines.append(f"  {name} drops per CPU: " + " ".join(f"cpu{i}={x}" for i, x in enumerate(v) if x))
    if rec.get("memcg_snapshots"):
        m = rec["memcg_snapshots"]
        lines.append(f"memcg member snapshots (memcgs in reclaim): {m.get('snapshots', 0)} taken, "
                     f"{m.get('member_rows', 0)} member rows, {m.get('truncated_members', 0)} members beyond the cap, "
                     f"{m.get('unresolved_memcgs', 0)} memcgs gone before they were read")
    if rec.get("cgroup_cpu"):
        c = rec["cgroup_cpu"]
        lines.append(f"CPU quota cgroups: {c.get('quota_cgroups', 0)} with a quota, {c.get('samples', 0)} samples, "
                     f"{c.get('rows', 0)} rows while throttled, {c.get('truncated_members', 0)} members beyond the cap")
    if rec.get("cpu_irq"):
        c = rec["cpu_irq"]
        lines.append(f"interrupt time per CPU: {c.get('samples', 0)} samples, {c.get('busy_samples', 0)} with a CPU "
                     f"busy in interrupts, {c.get('rows', 0)} rows")
    if rec.get("policy"):
        lines.append("")
        lines.append("capture policy: " + ", ".join(f"{k}={v}" for k, v in rec["policy"].items()))
    if rec.get("counters"):
        lines.append("")
        lines.append("aggregated in the kernel by design (not lost): " +
                     ", ".join(f"{k}={v}" for k, v in rec["counters"].items()))
    if rec.get("attach"):
        ok = sum(1 for a in rec["attach"] if a["attached"])
        lines.append("")
        lines.append(f"attached {ok}/{len(rec['attach'])} programs")
        for a in rec["attach"]:
            if not a["attached"]:
                lines.append(f"  NOT attached {a['section']}: {a['error'][:160]}")
    for probe, err in rec.get("load_errors", {}).items():
        lines.append(f"  probe {probe} not loaded: {err[:160]}")
    lines += render_host(rec.get("host") or {})
    lines += render_capabilities(rec.get("capabilities") or {})
    lines += render_pod_identity(rec.get("pod_identity") or {})
    clk = rec.get("clock")
    if clk:
        lines.append(f"clock: {clk['method']}, error bound ±{clk['error_ns']} ns")
    if rec.get("last_error"):
        lines.append(f"last error: {rec['last_error']}")
    lines.extend(_otel_lines(data.get("otel")))
    lines.extend(_control_lines(rec.get("control")))
    from kprobe.protocols.status import render_lines as payload_lines
    from kprobe.replay.status import render_lines as replay_lines

    lines.extend(payload_lines(data.get("payloads")))
    lines.extend(replay_lines(data.get("replay")))
    return "\n".join(lines)


def _control_lines(c: dict | None) -> list[str]:
    """The recorder's control sockets: queries run, and those refused in read-only mode (agent/control.py)."""
    if not c:
        return []
    out = ["", f"control socket: {c.get('sql_reads', 0)} read-only queries, {c.get('sql_writes', 0)} on the write "
               f"socket, {c.get('sql_refused', 0)} refused (read-only), {c.get('sql_failed', 0)} failed"]
    if c.get("last_refused"):
        out.append(f"  last refused: {c['last_refused']}")
    return out


def _otel_lines(otel: dict | None) -> list[str]:
    if not otel:
        return ["", "OTLP receiver: not running in the last session (spans come only through `kprobe record`/`run`)"]
    if otel.get("not_started"):
        return ["", f"OTLP receiver: NOT started, no spans recorded: {otel['not_started']}"]
    eps = ", ".join(e for e in (otel.get("grpc_endpoint"), otel.get("http_endpoint")) if e)
    out = ["", f"OTLP receiver ({eps}):",
           f"  spans received {otel['spans_received']}, stored {otel['spans_stored']}, "
           f"rejected (bad ids) {otel['spans_rejected_invalid_ids']}, failed writes {otel['spans_failed']}",
           f"  requests {otel['requests']}, rejected as malformed {otel['requests_rejected_malformed']}, "
           f"answered retry-later {otel['requests_sink_errors']}",
           f"  card numbers masked {otel['values_masked']}, sensitive attributes dropped "
           f"{otel['sensitive_attributes_dropped']}",
           f"  span times clamped to now's window {otel.get('spans_time_clamped', 0)}, http connections refused "
           f"(cap) {otel.get('http_connections_refused', 0)}, http requests cut (deadline) "
           f"{otel.get('http_deadline_exceeded', 0)}, grpc calls refused (cap) "
           f"{otel.get('grpc_calls_refused', 0)}, grpc calls cut (no request in time) {otel.get('grpc_calls_cut', 0)}"]
    if otel.get("last_error"):
        out.append(f"  last span write error: {otel['last_error']}")
    return out
