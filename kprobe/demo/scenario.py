"""The payment incident, end to end: real processes, real kernel, real OTel SDK, one recording session.

payment-handler (instrumented) --TCP--> settlement-svc (not instrumented; ledger write + fsync)
                                        ^ same CPU, same real-time priority
                                   batch-job (N threads reading+hashing inside a small memcg:
                                              memcg reclaim, and run-queue pressure on that CPU)

settlement-svc and batch-job run SCHED_RR at one priority on one CPU: round-robin slices of
100 ms make the noisy neighbour's effect deterministic on a shared machine (ordinary CFS would
let the waking service in almost at once), while everything measured stays real kernel behaviour.
payment-handler runs on another CPU with normal scheduling. A few payments succeed before the
batch job starts; the next one times out; the recorder's data explain it within a second or so.

Everything is parametrised (names, timeout, threads, memcg limit, priority, CPUs) so tests can
run the same workloads as a different incident.

No-OTel mode (``DemoConfig.otel = False``, ``kprobe demo --no-otel``): the same incident with nothing
instrumented. payment-handler is an HTTP service that exports no spans and settles over HTTP; kprobe
captures the payloads of the two watched services, decodes them into spans (source kprobe.decoded),
and finds the failed payment (the handler's 504), its timeline and its root cause from those alone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from kprobe.demo.memcg import Memcg, MemcgError


@dataclass
class DemoConfig:
    data_dir: Path
    handler_name: str = "payment-handler"
    service_name: str = "settlement-svc"
    batch_name: str = "batch-job"
    timeout_ms: int = 750
    batch_threads: int = 5
    batch_seconds: float = 8.0          # upper bound; the job is stopped once the incident is explained
    incident_attempts: int = 3          # payments sent while the batch job runs, until one times out
    memcg_mb: int = 64                  # 0: no memory cgroup (CPU contention only)
    rt_priority: int = 10               # 0: normal scheduling for service and batch job
    service_cpu: int | None = None      # default: the last CPU we may use
    handler_cpu: int | None = None      # default: the first CPU
    warmup_payments: int = 2
    ramp_s: float = 0.4                 # batch job running before the failing payment
    card: str = "4111111111111111"      # a test PAN: stored masked (411111******1111)
    flush_ms: float = 1000.0             # the demo asks for a flush the moment the payment fails
    recorder_rt_priority: int = 1       # this (recording, analysing) process; 0: leave as is
    otlp_transport: str = "grpc"
    otel: bool = True                   # False: nothing exports spans; payments found in decoded traffic


@dataclass
class DemoResult:
    ok: bool                            # the incident happened and was explained
    payments: list[dict[str, Any]]
    failed: dict[str, Any] | None
    pids: dict[str, int]
    analysis: Any = None                # kprobe.causal.span_chain.SpanAnalysis
    incident_end_ns: int = 0
    printed_ns: int = 0
    text: str = ""
    notes: list[str] = field(default_factory=list)
    timeline: Any = None                # kprobe.finance.timeline.Timeline (no-OTel mode)

    @property
    def latency_s(self) -> float:
        """Incident end (the failed span's end) to the chain printed, seconds."""
        return (self.printed_ns - self.incident_end_ns) / 1e9 if self.printed_ns else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "payments": self.payments, "failed_payment": self.failed, "pids": self.pids,
                "why": self.analysis.to_json() if self.analysis is not None else None,
                "incident_end_ns": self.incident_end_ns, "printed_ns": self.printed_ns,
                "explained_after_s": self.latency_s if self.printed_ns else None, "notes": self.notes,
                "timeline": self.timeline.to_json() if self.timeline is not None else None}


class _Proc:
    """A workload subprocess speaking JSON lines on stdout (read unbuffered: select() must see every line)."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None):
        # workloads start with normal scheduling whatever this process runs at (chrt sets theirs)
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                                  preexec_fn=_normal_scheduling)
        self._buf = b""

    @property
    def pid(self) -> int:
        return self.p.pid

    def send(self, line: str) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write(line.encode() + b"\n")
        self.p.stdin.flush()

    def _line(self, deadline: float) -> bytes | None:
        """The next complete line, None at the deadline; raises if the process exited."""
        import select

        assert self.p.stdout is not None
        fd = self.p.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"pid {self.pid} exited (status {self.p.wait()})")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def expect(self, event: str, timeout: float = 30.0, **match: Any) -> dict[str, Any]:
        """The next line with this event (and these field values); a workload that dies or stalls is an error."""
        deadline = time.monotonic() + timeout
        while True:
            line = self._line(deadline)
            if line is None:
                raise TimeoutError(f"pid {self.pid}: no {event!r} line within {timeout} s")
            msg = json.loads(line)
            if msg.get("event") == event and all(msg.get(k) == v for k, v in match.items()):
                return msg

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)


def _normal_scheduling() -> None:
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def _wait_written(recorder: Any, mono_ns: int, timeout: float) -> bool:
    """Until everything the probes committed before ``mono_ns`` is in the store (not until the queue is empty:
    on a busy host the next batches are already queued behind it)."""
    recorder.wait_drained(0.0)  # asks the drain thread for a flush now instead of at the next period
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if recorder.stats.last_written_mono_ns >= mono_ns:
            return True
        time.sleep(0.005)
    return False


def _pin(cpu: int, rt: int) -> list[str]:
    argv = ["taskset", "-c", str(cpu)]
    if rt > 0 and shutil.which("chrt"):
        argv = ["chrt", "-r", str(rt)] + argv
    return argv


def _module(name: str) -> list[str]:
    return [sys.executable, "-m", f"kprobe.demo.{name}"]


def run_demo(cfg: DemoConfig, out: IO[str] = sys.stdout) -> DemoResult:
    """Record, run the incident, explain the failed payment; needs root (eBPF, cgroups, real-time priority)."""
    from kprobe.agent.probeset import ProbeConfig
    from kprobe.agent.recorder import RecorderConfig
    from kprobe.causal.span_chain import find_span, why_span
    from kprobe.embedded import EmbeddedSession
    from kprobe.otel.config import OtlpConfig

    cpus = sorted(os.sched_getaffinity(0))
    svc_cpu = cfg.service_cpu if cfg.service_cpu is not None else cpus[-1]
    handler_cpu = cfg.handler_cpu if cfg.handler_cpu is not None else cpus[0]
    work = cfg.data_dir / "demo-work"
    work.mkdir(parents=True, exist_ok=True)
    # the recorder's threads (created below, they inherit this) must not queue behind the real-time
    # batch job: keep this process off the contended CPU
    own_cpus = set(cpus)
    if len(cpus) > 1:
        os.sched_setaffinity(0, set(cpus) - {svc_cpu})
    # ... and must not wait behind ordinary work either (the chain is due within 2 s of the failure, and
    # on a loaded host an insert or query can otherwise take several times its CPU cost): a real-time
    # priority below the workloads'. Threads created from here on inherit both settings.
    own_sched = (os.sched_getscheduler(0), os.sched_getparam(0))
    if cfg.recorder_rt_priority > 0:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(cfg.recorder_rt_priority))

    def say(msg: str) -> None:
        print(msg, file=out, flush=True)

    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # not INFO lines about fork() with gRPC threads
    probes = ProbeConfig(filter_on=True, min_offcpu_ns=20_000)
    otlp = OtlpConfig(grpc_port=0 if cfg.otlp_transport == "grpc" else None,
                      http_port=0 if cfg.otlp_transport == "http" else None) if cfg.otel else None
    session = EmbeddedSession(cfg.data_dir, RecorderConfig(probes=probes, flush_ms=cfg.flush_ms), otlp).start()
    endpoint = ""
    if cfg.otel:
        rx = session.receiver
        endpoint = rx.grpc_endpoint if cfg.otlp_transport == "grpc" else rx.http_endpoint  # type: ignore[attr-defined]
    procs: list[_Proc] = []
    memcg: Memcg | None = None
    payload: Any = None
    result = DemoResult(ok=False, payments=[], failed=None, pids={})
    try:
        if not cfg.otel:
            from kprobe.protocols.capture import PayloadCapture

            payload = PayloadCapture(session.recorder.probes, write=session.store.write,
                                     status_dir=cfg.data_dir, tls=False).start()
        svc = _Proc([*_pin(svc_cpu, cfg.rt_priority), *_module("settlement_svc"), "--name", cfg.service_name,
                     "--ledger", str(work / "ledger.log")])
        procs.append(svc)
        session.recorder.watch_pid(svc.pid)
        svc.send("go")
        port = svc.expect("listening")["port"]
        env = dict(os.environ, OTEL_SERVICE_NAME=cfg.handler_name)
        export = ["--otlp-endpoint", endpoint, "--otlp-transport", cfg.otlp_transport] if cfg.otel else ["--no-otel"]
        handler = _Proc([*_pin(handler_cpu, 0), *_module("payment_handler"), "--name", cfg.handler_name,
                         "--target", f"127.0.0.1:{port}", "--timeout-ms", str(cfg.timeout_ms), *export], env=env)
        procs.append(handler)
        session.recorder.watch_pid(handler.pid)
        handler.send("go")
        pay_port = handler.expect("ready").get("port")
        result.pids = {cfg.handler_name: handler.pid, cfg.service_name: svc.pid}
        how = f"OTel → {endpoint}" if cfg.otel else f"HTTP on 127.0.0.1:{pay_port}, no OTel: traffic decoded by kprobe"
        say(f"kprobe demo: {cfg.handler_name} PID {handler.pid} ({how}) calls {cfg.service_name} "
            f"PID {svc.pid} on 127.0.0.1:{port} (not instrumented; ledger write + fsync, CPU {svc_cpu}); "
            f"timeout {cfg.timeout_ms} ms")

        def pay(payment: str, amount: str, timeout: float = 30.0) -> dict[str, Any]:
            if pay_port is None:
                handler.send(f"pay {payment} {amount} {cfg.card}")
            else:
                _post_payment(pay_port, payment, amount, cfg.card, timeout)
            return handler.expect("payment", timeout=timeout)

        for i in range(cfg.warmup_payments):
            r = pay(f"9870{i}", "25.00")
            result.payments.append(r)
            say(f"  payment {r['payment']}: {'ok' if r['ok'] else 'FAILED'} in {(r['end_ns'] - r['start_ns']) / 1e6:.1f} ms")

        batch_argv = [*_pin(svc_cpu, cfg.rt_priority), *_module("batch_job"), "--name", cfg.batch_name,
                      "--threads", str(cfg.batch_threads), "--seconds", str(cfg.batch_seconds),
                      "--input", str(work / "batch-input.dat")]
        batch = _Proc(batch_argv)
        procs.append(batch)
        if cfg.memcg_mb > 0:
            try:
                memcg = Memcg(f"kprobe-demo-{os.getpid()}", cfg.memcg_mb << 20)
                memcg.add(batch.pid)
            except (MemcgError, OSError) as e:
                result.notes.append(f"no memory cgroup ({e}): CPU contention only")
                memcg = None
        batch.send("go")
        batch.expect("started")
        result.pids[cfg.batch_name] = batch.pid
        say(f"  {cfg.batch_name} PID {batch.pid} starts on CPU {svc_cpu}: {cfg.batch_threads} threads"
            + (f", memory cgroup limit {cfg.memcg_mb} MiB" if memcg else "") + " (not watched)")
        time.sleep(cfg.ramp_s)

        # the batch job's grip on the CPU varies from run to run: the first payment that fails while it
        # runs is the incident (a payment that squeezes in just under the timeout is a near miss, not one)
        for attempt in range(max(1, cfg.incident_attempts)):
            r = pay(str(98721 + attempt), "100.00")
            result.payments.append(r)
            ms = (r["end_ns"] - r["start_ns"]) / 1e6
            if not r["ok"]:
                break
            say(f"  payment {r['payment']}: ok in {ms:.1f} ms" + (" (near miss)" if ms >= cfg.timeout_ms / 2 else ""))
        else:
            say(f"  no payment timed out in {cfg.incident_attempts} tries: no incident this time "
                f"(a quiet CPU {svc_cpu}?)")
            result.notes.append("the payment did not time out")
            return result
        result.failed = r
        result.incident_end_ns = int(r["end_ns"])
        say(f"  payment {r['payment']}: FAILED after {ms:.0f} ms: {r['error']}")
        batch.stop()  # the batch window closes; the service finishes the late settlement
        try:
            svc.expect("settled", timeout=2.0, payment=r["payment"])
        except TimeoutError:
            result.notes.append(f"{cfg.service_name} had not finished the settlement 2 s after the timeout")
        if not _wait_written(session.recorder, time.monotonic_ns(), 10.0):
            result.notes.append("the recorder had not written everything 10 s after the incident (overloaded host?)")
        store = session.store
        if payload is not None:
            payload.flush()
            span = _decoded_payment_span(store, cfg.handler_name, str(r["payment"]))
            if span is None:
                result.notes.append(f"payment {r['payment']} was not found in the decoded traffic")
                return result
            r.update(span_id=span.span_id, trace_id=span.trace_id)
            result.timeline = _timeline(store, str(r["payment"]))
        result.analysis = why_span(store, find_span(store, r["span_id"]))
        result.text = result.analysis.render()
        if result.timeline is not None:
            from kprobe.finance.timeline import render

            result.text = render(result.timeline, f"Payment #{r['payment']} (decoded traffic, no OTel)") \
                + "\n\n" + result.text
        result.printed_ns = time.time_ns()
        say("")
        say(result.text)
        say("")
        say(f"explained {result.latency_s:.2f} s after the payment failed")
        rc = result.analysis.analysis.root_cause
        result.ok = rc is not None and rc.culprit.pid == batch.pid
        return result
    finally:
        handler_quit = [p for p in procs if p.p.args and "payment_handler" in " ".join(p.p.args)]
        for p in handler_quit:
            try:
                p.send("quit")
            except OSError:
                pass
        for p in reversed(procs):
            p.stop()
        if memcg is not None:
            memcg.remove()
        if payload is not None:
            payload.stop()
        session.stop()
        os.sched_setaffinity(0, own_cpus)
        os.sched_setscheduler(0, own_sched[0], own_sched[1])


def _post_payment(port: int, payment: str, amount: str, card: str, timeout: float) -> int:
    """One payment to the no-OTel handler over HTTP; its status (the handler reports the details)."""
    import http.client

    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("POST", "/pay", body=json.dumps({"payment_id": payment, "amount": amount, "card": card}),
                  headers={"Content-Type": "application/json"})
        resp = c.getresponse()
        resp.read()
        return resp.status
    finally:
        c.close()


def _decoded_payment_span(store: Any, service: str, payment: str) -> Any:
    """The handler's own decoded server span of this payment (``POST /pay``), found by its body's id."""
    from kprobe.causal.span_chain import find_span

    rows = store.query_rows(
        "SELECT span_id FROM spans WHERE JSONExtractString(attributes, '@source') = 'kprobe.decoded' "
        f"AND service = '{_sql_text(service)}' AND kind = 2 AND JSONExtractString(attributes, 'body.payment_id') = "
        f"'{_sql_text(payment)}' ORDER BY ts_ns DESC LIMIT 1")
    return find_span(store, str(rows[0]["span_id"])) if rows else None


def _sql_text(s: str) -> str:
    return s.replace("\\", "\\\\").replace("'", "\\'")


def _timeline(store: Any, payment: str) -> Any:
    """The seed's timeline of the payment, from decoded spans and the kernel's ledger writes only."""
    from kprobe.finance.domain import parse
    from kprobe.finance.timeline import build

    dmap = parse({"events": [
        {"name": "Payment received", "kind": "payment_received", "match": {"route": "/pay*"}, "key": "body.payment_id"},
        {"name": "Settlement request", "kind": "settlement_instruction", "match": {"route": "/settle*"},
         "key": "body.payment_id"},
        {"name": "Settlement write", "kind": "ledger_write", "match": {"path": "*/ledger.log"}},
    ]})
    return build(store, dmap, payment)


def explore_commands(data_dir: Path, result: DemoResult, service_name: str, kp: str = "kprobe") -> list[str]:
    d = f"--data {data_dir}"
    out = []
    if result.failed:
        out.append(f"{kp} why {d} --span {result.failed['span_id']}          # this chain again (--json for tools)")
        out.append(f"{kp} why {d} --trace {result.failed['trace_id']}")
    out.append(f"{kp} incidents {d}                              # every slow or failed operation, newest first")
    if service_name in result.pids:
        out.append(f"{kp} events {d} --pid {result.pids[service_name]} --type offcpu syscall   # the uninstrumented service")
    out.append(f"{kp} sql {d} \"SELECT name, duration_ns/1e6 AS ms, status_message, attributes FROM spans\"")
    out.append(f"{kp} stats {d}")
    return out
