"""Read a replay log (see replay/capture.py) into the ordered event stream of one process.

The stream starts after the process's last successful exec: what a process did before exec
belongs to another program image and cannot be replayed. A process whose exec was not recorded
(the watch began later) is refused with a clear reason.

Events are in the order replay hands over between threads (replay/order.py): when each thread
came back from its syscall and started its next run of user code. That is the syscall's exit,
unless the thread was switched out right at that return and a sibling ran first: the probe's
resume record then gives the real start (``KP_NR_RESUME``). A thread switched out in the middle
of its user code while a sibling ran cannot be ordered exactly; those points are kept in
``ProcessLog.ambiguous`` and replay reports them.

Every record is checked; the first point where the stream is no longer trustworthy is kept as
``replayable_until`` (a global event index): a per-thread sequence gap (a record lost in a full
ring), a data chunk lost, or data over the per-syscall cap. Replay stops there and says why,
rather than answering later syscalls from an incomplete log.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kprobe.replay.capture import META_FILE, RDATA_FILE, RSYS_FILE
from kprobe.replay.seccomp import NR_URETPROBE, hand_over
from kprobe.schemas import layouts as L
from kprobe.schemas import syscall_table as ST

NR_EXECVE, NR_EXECVEAT = ST.nr("execve"), ST.nr("execveat")
NR_EXIT, NR_EXIT_GROUP = ST.nr("exit"), ST.nr("exit_group")
KP_NR_RESUME = L.KP_NR_RESUME  # records.h: a thread resumed after a sibling ran (not a syscall)


class LogError(ValueError):
    """The log cannot be replayed for this process (reason in the message)."""


@dataclass
class Event:
    index: int          # position in the process's global (completion-ordered) stream
    tid: int
    seq: int
    nr: int
    args: tuple[int, ...]
    ret: int
    enter_ns: int
    exit_ns: int
    flags: int
    regions: dict[int, bytes] = field(default_factory=dict)

    @property
    def vdso(self) -> bool:
        return bool(self.flags & L.KP_RSYS_VDSO)

    @property
    def dur_ns(self) -> int:
        return max(0, self.exit_ns - self.enter_ns)


@dataclass
class Ambiguity:
    """A thread was switched out in the middle of its user code (after ``after``, the index of its
    last hand-over event) and a sibling ran before it resumed: which of the two touched shared
    memory first is not in the log."""

    after: int
    tid: int
    out_ns: int
    in_ns: int
    ip: int
    syscall: int  # the (not ordered) syscall it was switched out in; < 0: preempted in user mode


@dataclass
class ProcessLog:
    tgid: int
    events: list[Event]
    exec_ns: int
    clock_offset_ns: int
    replayable_until: int          # events[:replayable_until] are complete
    problem: str = ""              # why the stream ends early, if it does
    meta: dict = field(default_factory=dict)
    ambiguous: list[Ambiguity] = field(default_factory=list)
    # what replay derives from the log (plans, hashes), computed once and shared by its replays
    derived: dict = field(default_factory=dict, repr=False, compare=False)

    def by_thread(self) -> dict[int, list[Event]]:
        out: dict[int, list[Event]] = {}
        for e in self.events:
            out.setdefault(e.tid, []).append(e)
        return out


def load_arrays(session: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    meta = json.loads((session / META_FILE).read_text()) if (session / META_FILE).exists() else {}
    rsys = np.fromfile(session / RSYS_FILE, dtype=L.KP_RSYS) if (session / RSYS_FILE).exists() else None
    if rsys is None:
        raise LogError(f"{session} has no {RSYS_FILE}: not a replay log")
    rdata = np.fromfile(session / RDATA_FILE, dtype=L.KP_RDATA)
    return rsys, rdata, meta


def tgids(session: Path) -> list[int]:
    rsys = np.fromfile(session / RSYS_FILE, dtype=L.KP_RSYS)
    return sorted(set(rsys["tgid"].tolist()))


def find_session(data: Path, tgid: int) -> Path:
    """Newest replay session under <data>/replay holding events of this process."""
    root = data / "replay"
    sessions = sorted((p for p in root.iterdir() if (p / RSYS_FILE).exists()), reverse=True) if root.is_dir() else []
    for s in sessions:
        rsys = np.fromfile(s / RSYS_FILE, dtype=L.KP_RSYS)
        if np.any(rsys["tgid"] == tgid):
            return s
    raise LogError(f"no replayable recording of pid {tgid} under {root} (record with --replayable)")


def load(session: Path, tgid: int | None = None) -> ProcessLog:
    rsys, rdata, meta = load_arrays(session)
    if tgid is None:
        present = sorted(set(rsys["tgid"].tolist()))
        if len(present) != 1:
            raise LogError(f"{session} holds processes {present}: say which one (--pid)")
        tgid = present[0]
    mine = rsys[rsys["tgid"] == tgid]
    if mine.size == 0:
        raise LogError(f"{session} has no events of pid {tgid}")
    execs = mine[np.isin(mine["nr"], (NR_EXECVE, NR_EXECVEAT)) & (mine["ret"] == 0)]
    if execs.size == 0:
        raise LogError(
            f"pid {tgid} was not recorded from exec: its memory, fds and start-up cannot be reconstructed "
            "(start it under `kprobe run --replayable` or let --watch-comm catch its exec)"
        )
    ex = execs[np.argmax(execs["exit_ns"])]
    exec_tid, exec_seq, exec_ns = int(ex["tid"]), int(ex["seq"]), int(ex["exit_ns"])
    mine = mine[np.where(mine["tid"] == exec_tid, mine["seq"] > exec_seq, mine["enter_ns"] > exec_ns)]
    problems: list[tuple[int, str]] = []  # (exit_ns, reason)
    for tid in np.unique(mine["tid"]).tolist():
        t = np.sort(mine[mine["tid"] == tid], order="seq")
        start = exec_seq if tid == exec_tid else int(t["seq"][0]) - 1
        expect = np.arange(start + 1, start + 1 + len(t))
        gaps = np.nonzero(t["seq"] != expect)[0]
        if gaps.size:
            i = int(gaps[0])
            problems.append((int(t["exit_ns"][i]), f"thread {tid}: record lost before sequence {int(t['seq'][i])}"))
    bad = mine[(mine["flags"] & (L.KP_RSYS_TRUNCATED | L.KP_RSYS_DATA_LOST)) != 0]
    for b in bad:
        what = "data over the per-syscall cap" if b["flags"] & L.KP_RSYS_TRUNCATED else "data chunk lost"
        problems.append((int(b["exit_ns"]), f"thread {int(b['tid'])} seq {int(b['seq'])} nr {int(b['nr'])}: {what}"))
    resumes = mine[mine["nr"] == KP_NR_RESUME]
    mine = _drop_nested_syscalls(mine[(mine["nr"] != NR_URETPROBE) & (mine["nr"] != KP_NR_RESUME)])
    key, split = _hand_over_keys(mine, resumes)
    order = np.lexsort((mine["seq"], mine["tid"], key))
    mine = mine[order]
    position = {(int(r["tid"]), int(r["seq"])): i for i, r in enumerate(mine)}
    chunks = _chunks_by_key(rdata[rdata["tgid"] == tgid])
    events: list[Event] = []
    for i, r in enumerate(mine):
        key = (int(r["tid"]), int(r["seq"]))
        regions, nchunks = _assemble(chunks.get(key, []))
        if nchunks != int(r["nchunks"]) and not r["flags"] & L.KP_RSYS_DATA_LOST:
            problems.append((int(r["exit_ns"]), f"thread {key[0]} seq {key[1]}: {int(r['nchunks'])} data chunks "
                             f"recorded, {nchunks} in the log"))
        events.append(Event(i, key[0], key[1], int(r["nr"]), tuple(int(a) for a in r["args"]), int(r["ret"]),
                            int(r["enter_ns"]), int(r["exit_ns"]), int(r["flags"]), regions))
    until, problem = len(events), ""
    if problems:
        t_bad, problem = min(problems)
        until = next((e.index for e in events if e.exit_ns >= t_bad), len(events))
    ambiguous = [Ambiguity(position[(tid, seq)], tid, *rest) for tid, seq, *rest in split]
    return ProcessLog(tgid, events, exec_ns, int(meta.get("clock_offset_ns", 0)), until, problem, meta,
                      ambiguous=ambiguous)


def _hand_over_keys(rs: np.ndarray, resumes: np.ndarray) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """When each event's thread started its next run of user code: its exit, or the resume after
    a switch-out right at that return. Also the (tid, seq, out, in, ip, syscall) of split runs."""
    key = rs["exit_ns"].astype(np.int64).copy()
    split: list[tuple[int, ...]] = []
    for tid in np.unique(resumes["tid"]).tolist():
        mine = np.nonzero(rs["tid"] == tid)[0]
        handing = sorted((i for i in mine.tolist() if hand_over(int(rs["nr"][i]), tuple(int(a) for a in rs["args"][i]))),
                         key=lambda i: int(rs["seq"][i]))
        seqs = rs["seq"][handing]
        for r in resumes[resumes["tid"] == tid]:
            k = int(np.searchsorted(seqs, r["seq"])) - 1  # its last hand-over before the resume
            if k < 0:
                continue
            i = handing[k]
            sysno = int(r["args"][3])
            sysno = sysno - (1 << 64) if sysno >= 1 << 63 else sysno
            if sysno in (NR_EXIT, NR_EXIT_GROUP):
                continue  # switched out while ending: no user code of it runs again
            if int(r["args"][0]) and key[i] == rs["exit_ns"][i]:
                key[i] = int(r["exit_ns"])  # its run started only now
            else:
                split.append((tid, int(rs["seq"][i]), int(r["enter_ns"]), int(r["exit_ns"]), int(r["args"][1]), sysno))
    return key, split


def _drop_nested_syscalls(rs: np.ndarray) -> np.ndarray:
    """A syscall made inside a recorded libc time call (vDSO fallback) is part of that call."""
    vd = rs[(rs["flags"] & L.KP_RSYS_VDSO) != 0]
    if vd.size == 0:
        return rs
    keep = np.ones(len(rs), dtype=bool)
    for v in vd:
        inner = (rs["tid"] == v["tid"]) & (rs["enter_ns"] >= v["enter_ns"]) & (rs["exit_ns"] <= v["exit_ns"])
        inner &= (rs["flags"] & L.KP_RSYS_VDSO) == 0
        keep &= ~inner
    return rs[keep]


def _chunks_by_key(rd: np.ndarray) -> dict[tuple[int, int], list[np.void]]:
    out: dict[tuple[int, int], list] = {}
    for r in rd:
        out.setdefault((int(r["tid"]), int(r["seq"])), []).append(r)
    return out


def _assemble(chunks: list) -> tuple[dict[int, bytes], int]:
    regions: dict[int, bytearray] = {}
    for c in chunks:
        buf = regions.setdefault(int(c["region"]), bytearray())
        off, n = int(c["offset"]), int(c["len"])
        if len(buf) < off + n:
            buf.extend(b"\0" * (off + n - len(buf)))
        buf[off : off + n] = c["data"][:n].tobytes()
    return {k: bytes(v) for k, v in regions.items()}, len(chunks)
