"""Embedded mode: recorder + chDB store + control socket in one process.

`kprobe record` and `kprobe run` both start one of these; the same Recorder
feeds Kafka in scale-out mode, only the sink differs. With ``otlp`` set, the
session also runs the OTLP receiver and stores spans in the same store, so
spans and kernel events can be joined (host + pid + thread + time).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kprobe.agent import code_pages
from kprobe.agent.control import ControlServer
from kprobe.agent.probeset import ProbeSet
from kprobe.agent.recorder import Recorder, RecorderConfig
from kprobe.otel.config import OtlpConfig
from kprobe.otel.errors import ReceiverBindError
from kprobe.query.stats import OTEL_STATUS
from kprobe.sinks.chdb_store import ChdbStore
from kprobe.sinks.store_sink import StoreSink
from kprobe.topics.malloc import keep_freed_memory

log = logging.getLogger("kprobe")
EMBEDDED_MMAP_BYTES = 256 << 10   # glibc's default start, held fixed (topics/malloc.py sets both thresholds)
EMBEDDED_TRIM_BYTES = 1 << 20


@dataclass
class EmbeddedSession:
    data_dir: Path
    config: RecorderConfig
    otlp: OtlpConfig | None = None
    # called once the probes are loaded and attached, before any thread starts (capabilities are
    # per thread: threads started later inherit what is left); `kprobe record` drops privileges here
    after_probes: Callable[[], None] | None = None
    receiver: object | None = field(default=None, init=False)
    otlp_error: str = field(default="", init=False)

    def start(self) -> EmbeddedSession:
        # a batch's buffers (over 256 KiB) go back to the kernel when freed, not into a heap that keeps
        # them between flushes (glibc raises its mmap threshold up to 32 MiB after the first such free)
        keep_freed_memory(mmap_bytes=EMBEDDED_MMAP_BYTES, trim_bytes=EMBEDDED_TRIM_BYTES)
        probes = ProbeSet(self.config.probes).open()
        try:
            if self.after_probes is not None:
                self.after_probes()
            return self._start(probes)
        except BaseException:
            probes.close()
            raise

    def _start(self, probes: ProbeSet) -> EmbeddedSession:
        # the resident peak is the engine's start-up: each side of it, drop the code run once (the probes'
        # loading before, the engine's initialisers after) so the two do not add up (agent/code_pages.py)
        code_pages.trim(code_pages.SHARED_OBJECTS)
        self.store = ChdbStore(self.data_dir)
        code_pages.trim(code_pages.SHARED_OBJECTS)
        if self.otlp is not None:  # bind the ports first: a taken port fails fast, before probes load
            try:
                self._start_otlp(self.otlp)
            except ReceiverBindError as e:
                if self.otlp.required:
                    self.store.close()
                    raise
                self.otlp_error = str(e)
                print(f"kprobe: WARNING: OTLP receiver not started ({e}); recording without spans. "
                      "Free the port or pass --otlp-grpc-port/--otlp-http-port (0 = any free port).", file=sys.stderr)
            except BaseException:
                self.store.close()
                raise
        self.config.status_path = self.data_dir / "status.json"
        self.recorder = Recorder(self.config, StoreSink(self.store), retention=self._retention)
        try:
            self.recorder.start(probes)
        except BaseException:
            if self.receiver is not None:
                self.receiver.stop()  # type: ignore[attr-defined]
            self.store.close()
            raise
        from kprobe.query.readonly import socket_reader
        from kprobe.query.sqlguard import SqlRefused

        read = socket_reader(self.store.path / "chdb", self.recorder.fresh)  # the read socket: read-only, enforced here
        self.control = ControlServer(self.data_dir, self._fresh_query, self.live_stats, read=read,
                                     refused=(SqlRefused,)).start()
        self.report_attach(sys.stderr)
        return self

    def _retention(self, max_age_ns: int | None, max_bytes: int | None, now_ns: int) -> int:
        """One retention pass on the store; what it did is added up in the recorder's stats."""
        dropped = self.store.enforce_retention(max_age_ns, max_bytes, now_ns)
        last, total = self.store.last_retention, self.recorder.stats.retention
        for k in ("dropped", "future_dropped", "trimmed"):
            total[k] = total.get(k, 0) + int(last.get(k, 0))
        for k in ("bytes_before", "bytes_after_estimate"):
            total[k] = int(last.get(k, 0))
        return dropped

    def _start_otlp(self, cfg: OtlpConfig) -> None:
        from kprobe.otel.receiver import OtlpReceiver
        from kprobe.otel.span_writer import SpanWriter

        self.span_writer = SpanWriter(self.store, host=self.config.host)   # --host-name: spans named like the rows
        rx = OtlpReceiver(self.span_writer, cfg.host, cfg.grpc_port, cfg.http_port)
        rx.start()  # ReceiverBindError names the port that is taken
        self.receiver = rx

    def otel_stats(self) -> dict | None:
        """Span counters (received, rejected, stored, write errors), or None without a receiver."""
        if self.receiver is None:
            return {"not_started": self.otlp_error} if self.otlp_error else None
        from kprobe.otel.span_writer import otel_summary

        rx = self.receiver
        out = otel_summary(rx.stats(), self.span_writer.snapshot())  # type: ignore[attr-defined]
        out["grpc_endpoint"] = rx.grpc_endpoint if rx.grpc_port is not None else ""  # type: ignore[attr-defined]
        out["http_endpoint"] = rx.http_endpoint if rx.http_port is not None else ""  # type: ignore[attr-defined]
        return out

    def live_stats(self) -> dict:
        d = self.recorder.stats.to_dict()
        d["otel"] = self.otel_stats()
        return d

    def _save_otel_status(self) -> None:
        stats = self.otel_stats()
        path = self.data_dir / OTEL_STATUS
        if stats is None:
            path.unlink(missing_ok=True)
            return
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(stats, indent=1))
        os.replace(tmp, path)

    def _fresh_query(self, sql: str, fmt: str) -> bytes:
        """Queries see what the rings held a moment ago, although the store is flushed rarely."""
        self.recorder.fresh()
        return self.store.query(sql, fmt)

    def report_attach(self, out) -> None:
        st = self.recorder.stats
        ok = [a for a in st.attach if a["attached"]]
        bad = [a for a in st.attach if not a["attached"]]
        print(f"kprobe: attached {len(ok)} programs ({', '.join(sorted({a['section'].split('/')[0] for a in ok}))})",
              file=out)
        for a in bad:
            print(f"kprobe: NOT attached {a['section']} ({a['probe']}): {a['error'][:200]}", file=out)
        for probe, err in st.load_errors.items():
            print(f"kprobe: probe '{probe}' not loaded, its events are missing: {err[:300]}", file=out)
        c = st.clock
        if c:
            print(f"kprobe: clock {c.method}, error bound ±{c.error_ns} ns", file=out)
        if self.receiver is not None:
            rx = self.receiver
            eps = [e for e in (f"grpc {rx.grpc_endpoint}" if rx.grpc_port is not None else "",  # type: ignore[attr-defined]
                               f"http {rx.http_endpoint}" if rx.http_port is not None else "") if e]  # type: ignore[attr-defined]
            print(f"kprobe: OTLP receiver on {', '.join(eps)} (spans -> table spans)", file=out)

    def stop(self) -> None:
        if self.receiver is not None:
            self.receiver.stop()  # type: ignore[attr-defined]
        self.recorder.stop()
        self._save_otel_status()
        self.control.stop()
        self.store.close()
