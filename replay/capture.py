"""Replayable capture: load probes/replay.bpf.o next to a running recorder and write a replay log.

Why a log file and not chDB tables: replay needs, for one process, its complete ordered syscall
stream with the exact bytes it received (binary, often not UTF-8), read front to back once. A
replay must also be possible while the recorder still owns the chDB directory (chDB is exclusive
to one process, see FIELD-NOTES) and on another machine (copy one directory). So the replay stream
is appended, batch by batch, as raw fixed-size records to files in ``<data>/replay/<session>/``:

    rsys.bin    kp_rsys records (schemas/records.h), in drain order
    rdata.bin   kp_rdata chunks
    meta.json   host, clock offset (kernel monotonic -> UTC), counters (drops, truncations), state

Syscall records are written as the numpy batch's bytes, as they are. Data chunks first go
through the card-data masker (replay/log_masking.py: per stream, so it costs a little Python per
chunk, and it holds back the last few hundred bytes of each stream until more arrives). The
ordinary recorder keeps storing its event tables (offcpu, syscall, ...) in chDB as before; this
stream only adds what replay needs.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kprobe.agent import clock
from kprobe.agent.libbpf import LibbpfError
from kprobe.agent.probeset import BUILD_DIR, ProbeSet
from kprobe.agent.ringbuf import RingReader
from kprobe.masking import install_log_masking
from kprobe.replay import timeprobes
from kprobe.replay.log_masking import ReplayMasker
from kprobe.replay.seccomp import hand_over_numbers
from kprobe.replay.serialize import default_cpu, observed, serialize_process, serialize_thread
from kprobe.replay.vdso_exec import patch_at_exec, seize
from kprobe.schemas import layouts as L

RSYS_FILE = "rsys.bin"
RDATA_FILE = "rdata.bin"
META_FILE = "meta.json"
COUNTER_NAMES = {
    L.KP_RCNT_SYS_DROPS: "rsys_drops",
    L.KP_RCNT_DATA_DROPS: "rdata_drops",
    L.KP_RCNT_TRUNCATED: "truncated_syscalls",
    L.KP_RCNT_TRUNC_BYTES: "truncated_bytes",
    L.KP_RCNT_UPROBE_OTHER: "uprobe_hits_other_processes",
}


@dataclass
class ReplayCapture:
    """Owns the replay probe object, its two rings and the log directory of one session."""

    probes: ProbeSet
    out_dir: Path
    max_bytes_per_syscall: int = 1 << 20
    rsys_ring_bytes: int = 16 << 20
    rdata_ring_bytes: int = 64 << 20
    poll_ms: float = 5.0
    attach_errors: list[str] = field(default_factory=list)
    written: dict[str, int] = field(default_factory=lambda: {"rsys": 0, "rdata": 0})
    drain_cpu_s: float = 0.0  # CPU time of the drain thread so far (what the drain pays, off the recorded CPU)
    cpu: int = field(default_factory=default_cpu)     # where recorded processes run, serialized
    serialized: dict[int, dict] = field(default_factory=dict)  # tgid -> what serialize.py applied
    time_reads: dict[int, dict] = field(default_factory=dict)  # pid -> how its vDSO time reads are recorded
    _seized: set[int] = field(default_factory=set)  # children held for patch_at_exec (replay/vdso_exec.py)
    _starts_serialized: set[int] = field(default_factory=set)  # children that serialize themselves before exec
    _masker: ReplayMasker = field(default_factory=ReplayMasker)

    @property
    def pans_masked(self) -> int:
        """Card numbers, track data and sensitive values masked so far (replay/log_masking.py)."""
        return self._masker.streams_masked()

    def start(self, host_wide_uprobes: bool = False) -> ReplayCapture:
        """Load and attach. The time uprobes go on each recorded process (attach_time_uprobes)
        or, with ``host_wide_uprobes`` (recording processes caught later by name), on every
        process, filtered in the program (the hits in other processes are counted)."""
        install_log_masking()  # this process now handles raw payloads: no card data in its logs either
        self.out_dir.mkdir(parents=True, exist_ok=True)
        obj = self.probes.open_object(BUILD_DIR / "replay.bpf.o")
        try:
            obj.set_max_entries("rb_rsys", self.rsys_ring_bytes)
            obj.set_max_entries("rb_rdata", self.rdata_ring_bytes)
            obj.load()
        except LibbpfError:
            obj.close()
            raise
        self.obj = obj
        cfg = np.zeros(1, dtype=L.KP_RCONFIG)
        cfg["max_bytes"] = self.max_bytes_per_syscall
        obj.map("kp_rconfig_map").update(np.zeros(1, dtype=np.uint32), cfg)
        ordered = obj.map("kp_rordered")
        for nr in hand_over_numbers():
            ordered.update(np.array([nr], dtype=np.uint32), np.ones(1, dtype=np.uint8))
        uprobe_progs = {p for progs in timeprobes.TIME_PROBES.values() for p in progs}
        for prog in obj.programs():
            if prog.name in uprobe_progs:
                continue
            obj.links.append(prog.attach())  # a tracepoint that does not attach is fatal here
        self._uprobe_pids: set[int] = set()
        if host_wide_uprobes:
            self.attach_time_uprobes(-1)
        m_sys, m_data = obj.map("rb_rsys"), obj.map("rb_rdata")
        self._readers = {
            "rsys": RingReader(m_sys.fd, m_sys.max_entries, L.KP_RSYS, "rsys"),
            "rdata": RingReader(m_data.fd, m_data.max_entries, L.KP_RDATA, "rdata"),
        }
        self._files = {
            "rsys": open(self.out_dir / RSYS_FILE, "ab"),
            "rdata": open(self.out_dir / RDATA_FILE, "ab"),
        }
        self._clock = clock.sample(32)
        self._started_ns = time.time_ns()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._flushed: list[threading.Event] = []
        self._write_meta(finished=False)
        self._thread = threading.Thread(target=self._loop, name="kprobe-replay-drain", daemon=True)
        self._thread.start()
        return self

    def attach_time_uprobes(self, pid: int) -> None:
        """Uprobes on libc's time functions (replay/timeprobes.py) for process ``pid`` (all its
        threads, across its exec: the kernel filters per address space), or every process with -1. Attach before
        the process execs, or its first time reads are missed (and synthesized at replay)."""
        if pid in self._uprobe_pids or -1 in self._uprobe_pids:
            return
        self._uprobe_pids.add(pid)
        links, errors = timeprobes.attach(self.probes.lib.lib, {p.name: p for p in self.obj.programs()}, pid)
        self.obj.links.extend(links)
        for e in errors:
            if e not in self.attach_errors:
                self.attach_errors.append(e)

    def before_exec(self, pid: int, how: str = "vdso") -> None:
        """``pid`` is a command this process forked and holds before its exec (ReplayRecorder,
        ``kprobe run``): arrange for its time reads to be recorded. ``how`` "vdso": seize it so
        that at_exec patches its vDSO into syscalls (replay/vdso_exec.py: ~1.4 µs of service CPU per
        read instead of ~2.0 µs with libc uprobes, and gettimeofday/time recorded too); if that cannot be done
        (no ptrace here), or with "uprobes", the libc uprobes go on it now. Call from the thread that
        forked it, then at_exec from the same thread once the child may exec."""
        self._starts_serialized.add(pid)
        why = seize(pid) if how == "vdso" else "libc uprobes asked for"
        if why:
            self.attach_time_uprobes(pid)
            self.time_reads[pid] = {"how": "libc uprobes", "why": why}
        else:
            self._seized.add(pid)

    def at_exec(self, pid: int) -> int | None:
        """After letting a child prepared by before_exec exec: patch its vDSO at the exec stop
        (falls back to the libc uprobes while it is still stopped). Returns the child's exit
        status if it ended before its exec (not reaped), else None."""
        if pid not in self._seized:
            return None
        self._seized.discard(pid)
        r = patch_at_exec(pid, fallback=lambda: self.attach_time_uprobes(pid))
        if r.exit_status is not None:
            return r.exit_status  # never ran anything to record
        self.time_reads[pid] = ({"how": "vdso patched to syscalls", "symbols": r.patched} if r.patched
                                else {"how": "libc uprobes", "why": r.error})
        return r.exit_status

    def counters(self) -> dict[str, int]:
        ncpu = self.probes.lib.num_possible_cpus()
        m = self.obj.map("kp_rcounters")
        out: dict[str, int] = {}
        for idx, name in COUNTER_NAMES.items():
            vals = np.zeros(ncpu, dtype=np.uint64)
            m.lookup(np.array([idx], dtype=np.uint32), vals)
            out[name] = int(vals.sum())
        return out

    def _drain_once(self, final: bool = False) -> None:
        """Syscall records are written as drained; data chunks only once masked, which may hold
        some back until more of their stream is seen (replay/log_masking.py)."""
        rsys = self._readers["rsys"].drain()
        if rsys.size:
            self._serialize_new(rsys)
        self._masker.add_sys(rsys)
        ready = self._masker.add_data(self._readers["rdata"].drain())
        if final:
            ready = np.concatenate([ready, self._masker.finish()])
        for name, recs in (("rsys", rsys), ("rdata", ready)):
            if recs.size:
                self._files[name].write(recs.tobytes())
                self.written[name] += len(recs)

    def _serialize_new(self, rsys: np.ndarray) -> None:
        """A process seen for the first time runs serialized from now on (replay/serialize.py).
        `kprobe run` and ReplayRecorder serialize their child before its exec; a process caught
        by --watch-comm only here, a few ms after its exec (threads it made before may have
        overlapped: the probe's resume records tell, replay notes it)."""
        for tgid in np.unique(rsys["tgid"]).tolist():
            if tgid in self.serialized:
                continue
            if tgid in self._starts_serialized:
                # it serializes itself (with its starter's policy) between its first records and its
                # exec: serializing it here would race that, with the environment's policy
                try:
                    s = observed(tgid, self.cpu)
                except OSError:
                    s = None
                if s is not None:
                    self.serialized[tgid] = s.as_meta()
                continue
            s = serialize_process(tgid, self.cpu)
            self.serialized[tgid] = s.as_meta() if s else {"policy": "gone before it could be serialized"}

    def _loop(self) -> None:
        """Drains on the CPUs the recorded processes do not run on (they share one: serialize.py).

        Why: a drain thread that inherited the recorder's affinity to that CPU (a caller pinned to
        it, like bench/replay.py) took CPU time from the recorded process's peers there at every
        poll: the ledger service's recorded run was 1.62x native with it, 1.44x without (9
        alternating rounds). A starved drain thread is waited for at stop (see stop)."""
        others = set(os.sched_getaffinity(0)) - {self.cpu} or set(range(os.cpu_count() or 1)) - {self.cpu}
        if others:
            try:
                os.sched_setaffinity(0, others)
            except OSError:
                pass  # a cgroup's cpuset without them: drain where we are
        poll = self.poll_ms / 1000
        last_meta = time.monotonic()
        while not self._stop.is_set():
            waiting, self._flushed = self._flushed, []
            self._drain_once()
            if waiting or time.monotonic() - last_meta > 1.0:
                for f in self._files.values():
                    f.flush()
                self._write_meta(finished=False)
                last_meta = time.monotonic()
            for done in waiting:
                done.set()
            self.drain_cpu_s = time.thread_time()
            self._wake.wait(poll)
            self._wake.clear()

    def flush(self, timeout_s: float = 60.0) -> None:
        """Everything committed to the rings so far is on disk when this returns: the drain
        thread runs one more full drain and flushes (it may be slow to get a CPU on a busy host)."""
        done = threading.Event()
        self._flushed.append(done)
        self._wake.set()
        if not done.wait(timeout_s):
            raise RuntimeError(f"replay capture: no drain within {timeout_s} s")

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._wake.set()
        self._thread.join(120)  # a starved drain thread (nice 19 on a busy host) still finishes its batch
        if self._thread.is_alive():
            raise RuntimeError("replay capture: the drain thread did not stop within 120 s")
        self._drain_once(final=True)
        for f in self._files.values():
            f.close()
        self._write_meta(finished=True)
        for r in self._readers.values():
            r.close()
        self.obj.close()

    def _write_meta(self, finished: bool) -> None:
        meta = {
            "format": 1,
            "host": socket.gethostname(),
            "started_ns": self._started_ns,
            "clock_offset_ns": self._clock.offset_ns,
            "clock_error_ns": self._clock.error_ns,
            "rsys_itemsize": L.KP_RSYS.itemsize,
            "rdata_itemsize": L.KP_RDATA.itemsize,
            "max_bytes_per_syscall": self.max_bytes_per_syscall,
            "counters": self.counters(),
            "written": dict(self.written),
            "drain_cpu_s": round(self.drain_cpu_s, 4),
            "card_numbers_masked": self.pans_masked,
            "attach_errors": self.attach_errors,
            "serialized": {str(k): v for k, v in self.serialized.items()},
            "time_reads": {str(k): v for k, v in self.time_reads.items()},
            "finished": finished,
        }
        tmp = self.out_dir / (META_FILE + ".tmp")
        tmp.write_text(json.dumps(meta, indent=1))
        os.replace(tmp, self.out_dir / META_FILE)


def session_dir(data: Path) -> Path:
    """A new, unique directory for one replayable recording session."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    return data / "replay" / f"{stamp}-{os.getpid()}"


def _prepare_next_child(cap: ReplayCapture) -> None:
    """`kprobe run` forks its command after this. Right after that fork, before its exec, the
    child serializes itself (as ReplayRecorder's child does; the drain loop would only catch it
    after its exec). Its time reads are arranged by the forking thread, which holds the command
    before its exec: ``before_exec`` then ``at_exec`` (kprobe/cli/run.py), as ReplayRecorder does."""
    armed = [True]

    def child() -> None:
        if not armed[0]:
            return
        armed[0] = False
        try:
            serialize_thread(0, cap.cpu)
        except OSError:
            pass  # the drain loop tries again; the log's meta says what was applied

    def parent() -> None:
        armed[0] = False

    os.register_at_fork(after_in_child=child, after_in_parent=parent)


def start_if_requested(args, session) -> ReplayCapture | None:  # noqa: ANN001 - argparse + EmbeddedSession
    """`kprobe record/run --replayable`: the replay stream beside the recorder's own tables."""
    if not getattr(args, "replayable", False):
        return None
    probes = session.recorder.probes
    if not probes.config.filter_on and not probes.config.watch_pids and not probes.config.watch_comms:
        raise SystemExit("kprobe: error: --replayable needs --watch-comm/--watch-pid (or kprobe run)")
    run_command = bool(getattr(args, "command", None))  # kprobe run: a child not forked yet
    cap = ReplayCapture(probes, session_dir(args.data)).start(host_wide_uprobes=bool(getattr(args, "watch_comm", None)))
    for pid in getattr(args, "watch_pid", None) or []:
        cap.attach_time_uprobes(pid)
    if run_command:
        _prepare_next_child(cap)
    print(f"kprobe: replayable recording into {cap.out_dir}", flush=True)
    for err in cap.attach_errors:
        print(f"kprobe: replay: {err}")
    return cap
