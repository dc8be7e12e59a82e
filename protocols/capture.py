"""Kernel payload capture for watched processes: probes/payload.bpf.o -> :class:`Assembler` -> spans.

Loaded beside a running :class:`~kprobe.agent.probeset.ProbeSet` (it shares the watch list and
the configuration map, like the replay probe), so it follows exactly the processes the recorder
watches and never anything else: with no watch list the probe captures nothing at all.

A drain thread copies the ring out with numpy every ``poll_ms``, turns each record into a
:class:`~.assembler.Piece` (kernel monotonic time converted to UTC once per record, with the
agent's own clock sample), and hands it to the assembler; decoded exchanges are written to the
store's ``spans`` table every ``flush_ms`` through ``write`` (``ColumnStore.write``). Records
the ring had no room for and calls longer than a record are counted in the probe and reported by
:meth:`PayloadCapture.counters` with the decoders' own counters (malformed, unanswered...).
"""

from __future__ import annotations

import ctypes
import os
import queue
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kprobe.agent import clock
from kprobe.agent.libbpf import LibbpfError
from kprobe.agent.probeset import BUILD_DIR, ProbeSet
from kprobe.agent.varring import VarRingReader
from kprobe.masking import install_log_masking
from kprobe.schemas import layouts as L

from . import status as status_file
from .assembler import Assembler, Piece, addr_text

__all__ = ["PayloadCapture", "COUNTER_NAMES"]

COUNTER_NAMES = {
    L.KP_PCNT_DROPS: "payload_drops",
    L.KP_PCNT_TRUNCATED: "payload_truncated_calls",
    L.KP_PCNT_TRUNC_BYTES: "payload_truncated_bytes",
    L.KP_PCNT_NOT_TCP: "payload_not_tcp",
    L.KP_PCNT_TLS_NO_SOCK: "payload_tls_socket_unknown",
    L.KP_PCNT_DROPS_NOT_FULL: "payload_drops_ring_not_full",
}

#: struct kp_payload up to ``data``: each ring record is this header and then ``len`` captured bytes
#: (records are as long as what they carry; probes/payload.bpf.c). Checked against the generated
#: layout here and by tests/protocols/test_payload_records.py.
HEADER = struct.Struct("<QQIIiIIBBHHHI16s16s")
HEADER_LEN: int = L.KP_PAYLOAD.fields["data"][1]
if HEADER.size != HEADER_LEN:  # pragma: no cover - drift between records.h and this format
    raise ImportError(f"payload record header {HEADER.size} bytes here, {HEADER_LEN} in schemas/layouts.py")

#: OpenSSL functions -> (entry program, return program)
SSL_PROBES = {
    "SSL_write": ("kp_ssl_write_enter", "kp_ssl_write_exit"),
    "SSL_read": ("kp_ssl_read_enter", "kp_ssl_read_exit"),
    "SSL_write_ex": ("kp_ssl_write_ex_enter", "kp_ssl_write_ex_exit"),
    "SSL_read_ex": ("kp_ssl_read_ex_enter", "kp_ssl_read_ex_exit"),
}


class _UprobeOpts(ctypes.Structure):
    """struct bpf_uprobe_opts of libbpf 1.1 (sz first, so newer libbpf accepts it too)."""

    _fields_ = [("sz", ctypes.c_size_t), ("ref_ctr_offset", ctypes.c_size_t), ("bpf_cookie", ctypes.c_uint64),
                ("retprobe", ctypes.c_bool), ("func_name", ctypes.c_char_p)]


def libssl_paths() -> list[str]:
    """The OpenSSL libraries of this machine (``ldconfig -p``), newest soname first."""
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    paths = sorted({line.split("=>")[-1].strip() for line in out.splitlines()
                    if "libssl.so" in line and "=>" in line}, reverse=True)
    return [p for p in paths if os.path.exists(p)]


def _comm(tgid: int) -> str:
    try:
        with open(f"/proc/{tgid}/comm") as f:
            return f.read().strip()
    except OSError:
        return str(tgid)


@dataclass
class PayloadCapture:
    probes: ProbeSet
    write: Callable[[str, dict[str, np.ndarray]], int]
    host: str = field(default_factory=lambda: os.uname().nodename)
    ports: dict[int, str] = field(default_factory=dict)
    #: sized from pgbench at full speed on the 2-vCPU VM (bench/payload_kernel.py): at most ~2 MB/s of
    #: records (~140 B each) and a backlog never above 1.3 MB, so 16 MiB rides out a drain stall of ~8 s
    ring_bytes: int = 16 << 20
    obj_path: Path | None = None  #: another build of the payload probe (bench: size-class records)
    poll_ms: float = 5.0
    flush_ms: float = 1000.0  #: span rows written at most this often (an insert has a fixed cost)
    status_dir: Path | None = None  #: where ``kprobe stats`` finds the counters (the data directory)
    tls: bool = True  #: uprobes on OpenSSL for the plaintext of TLS connections
    tls_errors: list[str] = field(default_factory=list)
    tls_libraries: list[str] = field(default_factory=list)
    spans_written: int = 0
    short_records: int = 0  #: ring records shorter than their header says (a layout drift): skipped
    write_errors: int = 0
    _services: dict[int, str] = field(default_factory=dict)

    def start(self) -> PayloadCapture:
        install_log_masking()  # this process now holds raw payloads: no card data in its logs
        obj = self.probes.open_object(self.obj_path or BUILD_DIR / "payload.bpf.o")
        try:
            obj.set_max_entries("rb_payload", self.ring_bytes)
            obj.load()
        except LibbpfError:
            obj.close()
            raise
        self.obj = obj
        ssl_progs = {p for pair in SSL_PROBES.values() for p in pair}
        for prog in obj.programs():
            if prog.name not in ssl_progs:
                obj.links.append(prog.attach())
        if self.tls:
            self._attach_ssl({p.name: p for p in obj.programs()})
        ring = obj.map("rb_payload")
        self._reader = VarRingReader(ring.fd, ring.max_entries, "payload")
        self._clock = clock.sample(32)
        self.assembler = Assembler(self.host, dict(self.ports), self._service)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._flushed: list[threading.Event] = []
        self._last_drops = 0
        self._listed_drops = 0  #: drops the probe listed per socket, ever (see _take_holes)
        self._records = self._bytes = self._peak_pending = 0
        self._addrs: dict[tuple[int, int, int], tuple[str, str]] = {}
        # span rows are written by their own thread: an insert of a second's rows holds the drain
        # off the ring long enough for a busy service to fill it (pgbench lost records that way)
        # batches of span rows, flush marks (the events of the flushes waiting for them), None to stop
        self._rows: queue.Queue[tuple[int, dict[str, np.ndarray]] | list[threading.Event] | None] = \
            queue.Queue(maxsize=8)
        self._writer = threading.Thread(target=self._write_loop, name="kprobe-payload-write", daemon=True)
        self._writer.start()
        self._thread = threading.Thread(target=self._loop, name="kprobe-payload-drain", daemon=True)
        self._thread.start()
        return self

    def _attach_ssl(self, progs: dict) -> None:
        """Uprobes on every libssl of the machine, all processes (the programs keep only watched ones)."""
        fn = self.probes.lib.lib.bpf_program__attach_uprobe_opts
        fn.restype = ctypes.c_void_p
        fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p]
        paths = libssl_paths()
        if not paths:
            self.tls_errors.append("no libssl found (ldconfig -p): TLS payloads are not decoded")
        for path in paths:
            ok = True
            for func, (enter, ret) in SSL_PROBES.items():
                for prog, is_ret in ((enter, False), (ret, True)):
                    opts = _UprobeOpts(ctypes.sizeof(_UprobeOpts), 0, 0, is_ret, func.encode())
                    ctypes.set_errno(0)
                    link = fn(progs[prog].ptr, -1, path.encode(), 0, ctypes.byref(opts))
                    if link:
                        self.obj.links.append(int(link))
                    else:
                        ok = False
                        self.tls_errors.append(f"{func} in {path}: {os.strerror(ctypes.get_errno() or 1)}")
            if ok:
                self.tls_libraries.append(path)

    def _service(self, tgid: int) -> str:
        name = self._services.get(tgid)
        if name is None:
            name = self._services[tgid] = _comm(tgid)
        return name

    def counters(self) -> dict[str, int]:
        """Probe counters (drops, truncations) summed over CPUs, plus the assembler's."""
        ncpu = self.probes.lib.num_possible_cpus()
        m = self.obj.map("kp_pcounters")
        out: dict[str, int] = {}
        for idx, name in COUNTER_NAMES.items():
            v = np.zeros(ncpu, dtype=np.uint64)
            m.lookup(np.array([idx], dtype=np.uint32), v)
            out[name] = int(v.sum())
        out["payload_unidentified_connections"] = self.assembler.unidentified
        out["payload_gaps"] = self.assembler.gaps
        out["decoder_errors"] = self.assembler.decoder_errors
        out["payload_short_records"] = self.short_records
        out["decoded_spans_written"] = self.spans_written
        out["decoded_span_write_errors"] = self.write_errors
        return out

    def protocol_stats(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return self.assembler.protocol_stats()

    def ring_stats(self) -> dict[str, int]:
        """What sizes the ring: records and bytes drained, and the fullest the ring was seen."""
        return {"ring_bytes": self.ring_bytes, "records": self._records, "bytes": self._bytes,
                "peak_pending_bytes": self._peak_pending}

    def _drain_once(self) -> None:
        pending = self._reader.pending_bytes()
        if pending > self._peak_pending:
            self._peak_pending = pending
        # Drops first (the counter, then the probe's list of sockets, which the probe fills before
        # counting: every drop counted is listed by then), the drain second: each listed hole is then
        # in this batch or before it, and its time stamp places it among the socket's records.
        drops = self.counters_drops()
        holes = self._take_holes(drops) if drops > self._last_drops else {}
        buf, recs = self._reader.drain()
        self._records += len(recs)
        self._bytes += len(buf)
        unpack = HEADER.unpack_from
        with self._lock:
            addrs = self._addrs
            offset = self._clock.to_utc(0)
            for pos, size in recs:
                (ts, sk, tgid, tid, _fd, n, total, direction, flags, fam, sport, dport, _p, saddr, daddr) = unpack(buf, pos)
                if size < HEADER_LEN + n:  # a record shorter than it says: counted, never decoded
                    self.short_records += 1
                    continue
                if holes and sk in holes and ts > holes[sk][0]:
                    self._restart_at_hole(holes, sk)
                key = (sk, sport, dport)
                pair = addrs.get(key)
                if pair is None:  # formatted once per connection, not per record
                    if len(addrs) > 65536:
                        addrs.clear()
                    pair = addrs[key] = (addr_text(saddr, fam), addr_text(daddr, fam))
                data = buf[pos + HEADER_LEN : pos + HEADER_LEN + n]
                # positional: Piece's field order (ts_ns, tgid, tid, conn_id, outbound, data, total, laddr,
                # lport, raddr, rport, tls); keywords cost a named tuple a dict per record
                self.assembler.add(Piece(ts + offset, tgid, tid, sk, direction == 0, data, total,
                                         pair[0], sport, pair[1], dport, bool(flags & L.KP_PAYLOAD_F_TLS)))
            for sk in list(holes):  # holes after the batch's last record of their socket
                self.assembler.lost_on(sk)

    def _take_holes(self, drops: int) -> dict[int, list[int]]:
        """Sockets that lost records -> [first, last] loss time (bpf_ktime), the probe's list emptied.

        Cumulative accounting: the list may hold drops the counter did not yet (listed, then
        counted), so only more drops counted than ever listed means entries went missing (the
        list's LRU evicted them); then no connection can be trusted and every decoder restarts.
        """
        lost = self.obj.map("kp_payload_lost")
        keys, vals = lost.take_all(np.dtype(np.uint64), L.KP_PAYLOAD_LOST, lost.max_entries)
        self._listed_drops += int(vals["count"].sum())
        if drops > self._listed_drops:
            with self._lock:
                self.assembler.lost(drops - self._last_drops)
            self._listed_drops = drops
        self._last_drops = drops
        return {int(k): [int(v["first_ts"]), int(v["last_ts"])] for k, v in zip(keys, vals, strict=True)}

    def _restart_at_hole(self, holes: dict[int, list[int]], sk: int) -> None:
        """A record of sk stamped after its first loss: the hole is here. A later loss (last > first)
        is one more hole further on."""
        self.assembler.lost_on(sk)
        first, last = holes[sk]
        if last > first:
            holes[sk][0] = last
        else:
            del holes[sk]

    def counters_drops(self) -> int:
        ncpu = self.probes.lib.num_possible_cpus()
        v = np.zeros(ncpu, dtype=np.uint64)
        self.obj.map("kp_pcounters").lookup(np.array([L.KP_PCNT_DROPS], dtype=np.uint32), v)
        return int(v.sum())

    def _write(self) -> None:
        """Hand the rows so far to the writer thread (blocks only when 8 batches already wait)."""
        with self._lock:
            n = len(self.assembler.rows)
            if not n:
                return
            cols = self.assembler.rows.columns()
        self._rows.put((n, cols))

    def _write_loop(self) -> None:
        while (batch := self._rows.get()) is not None:
            if isinstance(batch, list):  # a flush mark: every batch queued before it is written now
                for done in batch:
                    done.set()
                self._rows.task_done()
                continue
            n, cols = batch
            try:
                self.write("spans", cols)
                self.spans_written += n
            except Exception:  # counted and visible in counters(); the capture goes on
                self.write_errors += 1
            finally:
                self._rows.task_done()
        self._rows.task_done()

    def status(self, running: bool = True) -> dict:
        return {"running": running, "counters": self.counters(), "protocols": self.protocol_stats(),
                "ring": self.ring_stats(),
                "tls_libraries": self.tls_libraries, "tls_errors": self.tls_errors[:10]}

    def _save_status(self, running: bool = True) -> None:
        if self.status_dir is not None:
            try:
                status_file.write(self.status_dir, self.status(running))
            except OSError:
                self.write_errors += 1

    def _loop(self) -> None:
        last = last_status = time.monotonic()
        while not self._stop.is_set():
            waiting, self._flushed = self._flushed, []
            self._drain_once()
            if waiting or time.monotonic() - last > self.flush_ms / 1000:
                self._write()
                last = time.monotonic()
            if time.monotonic() - last_status > 1.0:
                self._save_status()
                last_status = time.monotonic()
            if waiting:
                # flushed means written: the writer sets the events once the batches before them are in.
                # The drain goes on meanwhile (waiting here held it back for a whole insert: the ring filled)
                self._rows.put(waiting)
            self._wake.wait(self.poll_ms / 1000)
            self._wake.clear()

    def flush(self, timeout_s: float = 30.0) -> None:
        """Everything in the ring now is decoded and written when this returns."""
        done = threading.Event()
        self._flushed.append(done)
        self._wake.set()
        if not done.wait(timeout_s):
            raise RuntimeError(f"payload capture: no drain within {timeout_s} s")

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._wake.set()
        self._thread.join(60)
        self._drain_once()
        with self._lock:
            self.assembler.close_all(time.time_ns())
        self._write()
        self._rows.put(None)
        self._writer.join(60)
        self._save_status(running=False)
        self._reader.close()
        self.obj.close()
