"""Chains across hosts: one socket seen from both ends, two clocks aligned by the traffic itself, and the
host whose data is missing named instead of a wrong cause.

Why a module of its own: the single-host engine (fetch + analyze) stays as it is and runs once per host,
each time on a view holding only that host's rows (``HostSource.store``), in that host's clock. This
module only stitches: when a host's chain ends in a wait on a socket whose other end is not on that host
(``remote_service`` with no culprit), it finds the end with the swapped 4-tuple in another host's socket
rows, maps the wait's window into that host's clock with the estimated offset widened by its bound, and
asks that host's engine why the serving thread was slow. What it cannot join (NAT and service VIPs:
the 4-tuples differ; a peer host with no rows) it says in ``notes``/``missing``.

Clock offset, NTP-style with causal timestamps only. Rows of a request/response connection alternate in
turns (a run of sends by one end, received as a run of recvs by the other, same bytes). A ``sock_io``
row is stamped when its send/recv call returns, so a send's stamp can be after the peer already
received the bytes (loopback and veths deliver inside the call): send stamps are never used. What is
causal: an end sends turn k only after it received turn k-1 whole (turn-taking), and the other end
receives turn k whole only after that. So, with theta = B's clock minus A's, for each aligned turn k

* sent by A:  end of A's receive of turn k-1  <  end of B's receive of turn k   ->  theta < e_B(k) - e_A(k-1)
* sent by B:  end of B's receive of turn k-1  <  end of A's receive of turn k   ->  theta > e_B(k-1) - e_A(k)

and theta lies in [max lower, min upper] over every turn of every connection between the pair: the
estimate is the middle, the stated bound half the width (the tightest client think time plus the
tightest server reply time plus the two network delays). Turns are aligned by their byte counts, so a
request on one side matches its bytes on the other, not just the 4-tuple. A pipelining protocol breaks
turn-taking: then the bounds contradict each other (lower > upper) and no estimate is given. Rows folded
per socket (``--sock-flush-ms`` > 0) carry a later call's stamp: estimate only from per-call rows
(``--sock-flush-ms 0``) on both ends.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
import numpy as np

from kprobe.causal.model import Analysis, Cause
from kprobe.causal.records import Store
from kprobe.causal.why import NoDataError, render_text, why

MAX_HOPS = 6
PEER_SEARCH_NS = 60_000_000_000     # a peer's rows are looked for this far around the window (clocks unknown)
SKEW_PAIRS_NS = 30_000_000_000      # connection rows this far around the window feed the offset estimate
NO_ESTIMATE_MARGIN_NS = 50_000_000  # a peer window's margin when the pair's offset could not be estimated
MIN_TURNS = 2
ALIGN_WINDOW = 64      # turns compared per candidate shift


class End(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One side's socket row, as the offset estimate needs it (decoded straight from a JSON array)."""

    ts: int
    dir: str        # "send" | "recv"
    bytes: int
    saddr: str
    sport: int
    daddr: str
    dport: int
    tid: int = 0


class Turn(msgspec.Struct, frozen=True, gc=False):
    """A run of one end's rows in one direction (no cycles: untracked by the garbage collector, which a million
    tracked rows made scan for seconds)."""

    dir: str
    bytes: int
    end_ts: int     # the last row's stamp: for a recv turn, when the whole turn had been received
    first_ts: int = 0
    tid: int = 0    # the thread of the turn's first row


# the sending thread's switch-ins (off-CPU rows' end_ts, sorted) per tid: a send starts after its thread's
# latest switch-in before it, unless that switch-in was inside a send call (rows blocked in a send are left out)
SwitchIns = dict[int, list[int]]
SEND_CALLS = ("sendto", "sendmsg", "sendmmsg", "write", "writev", "pwrite64", "pwritev", "sendfile")


@dataclass(frozen=True)
class SkewEstimate:
    """host_b's clock minus host_a's: a host_b time minus ``offset_ns`` is a host_a time, within ``bound_ns``."""

    host_a: str
    host_b: str
    offset_ns: int
    bound_ns: int
    lower_ns: int
    upper_ns: int
    turns: int
    connections: int

    def to_json(self) -> dict[str, Any]:
        return {"host_a": self.host_a, "host_b": self.host_b, "offset_ns": self.offset_ns, "bound_ns": self.bound_ns,
                "lower_ns": self.lower_ns, "upper_ns": self.upper_ns, "turns": self.turns,
                "connections": self.connections}

    def describe(self) -> str:
        return (f"clock of {self.host_b} minus {self.host_a}: {self.offset_ns / 1e6:+.3f} ms ± {self.bound_ns / 1e6:.3f} ms "
                f"({self.turns} request/response turns on {self.connections} connection(s))")


def turns_of(rows: Iterable[End]) -> list[Turn]:
    """A connection end's rows in time order -> alternating turns (consecutive rows of one direction summed)."""
    out: list[Turn] = []
    for r in sorted(rows, key=lambda r: r.ts):
        if r.bytes <= 0:
            continue
        if out and out[-1].dir == r.dir:
            t = out[-1]
            out[-1] = Turn(t.dir, t.bytes + r.bytes, r.ts, t.first_ts, t.tid)
        else:
            out.append(Turn(r.dir, r.bytes, r.ts, r.ts, r.tid))
    return out


def _send_start_after(t: Turn, prev: Turn, switch_ins: SwitchIns | None) -> int:
    """A time the sending of turn ``t`` certainly started after: the end of receiving the previous turn
    (turn-taking), or later, the sending thread's latest switch-in before its first send row."""
    best = prev.end_ts
    times = switch_ins.get(t.tid) if switch_ins else None
    if times:
        i = bisect_right(times, t.first_ts)
        if i:
            best = max(best, times[i - 1])
    return best


def align(a: Sequence[Turn], b: Sequence[Turn], max_shift: int = 16) -> int | None:
    """The shift s with a[i] <-> b[i + s] (opposite directions, same bytes) matching most turns, or None.

    An end whose recording started mid-connection lacks the first turns; equal byte counts say which
    turn is which. At least MIN_TURNS matches and 80 % of the overlap must agree."""
    best: tuple[int, int] | None = None
    for s in range(-max_shift, max_shift + 1):
        first = max(0, -s)     # the shift is decided by the first ALIGN_WINDOW overlapping turns (turn_bounds checks
        pairs = [(a[i], b[i + s]) for i in range(first, min(len(a), len(b) - s, first + ALIGN_WINDOW))]  # every pair)
        good = sum(1 for x, y in pairs if x.dir != y.dir and x.bytes == y.bytes)
        if pairs and good >= MIN_TURNS and good >= 0.8 * len(pairs) and (best is None or good > best[0]):
            best = (good, s)
    return None if best is None else best[1]


def _conn_key(r: End) -> tuple:
    return (r.saddr, r.sport, r.daddr, r.dport)


def turn_bounds(a: Sequence[Turn], b: Sequence[Turn], shift: int, sw_a: SwitchIns | None = None,
                sw_b: SwitchIns | None = None) -> tuple[int | None, int | None, int]:
    """(lower, upper, turns used) of theta = clock(b) - clock(a) from one connection's aligned turns."""
    lo: int | None = None
    hi: int | None = None
    used = 0
    for i in range(1, len(a)):
        j = i + shift
        if not (1 <= j < len(b)):
            continue
        ta, tb, pa, pb = a[i], b[j], a[i - 1], b[j - 1]
        if ta.bytes != tb.bytes or ta.dir == tb.dir or pa.dir == pb.dir:
            continue
        if ta.dir == "send" and pa.dir == "recv" and tb.dir == "recv":
            u = tb.end_ts - _send_start_after(ta, pa, sw_a)   # A started sending turn i before B received it
            hi = u if hi is None else min(hi, u)
            used += 1
        elif ta.dir == "recv" and pb.dir == "recv" and tb.dir == "send":
            low = _send_start_after(tb, pb, sw_b) - ta.end_ts  # B started sending turn i before A received it
            lo = low if lo is None else max(lo, low)
            used += 1
    return lo, hi, used


def estimate_skew_reference(host_a: str, rows_a: Iterable[End], host_b: str, rows_b: Iterable[End],
                            sw_a: SwitchIns | None = None, sw_b: SwitchIns | None = None) -> SkewEstimate | None:
    """The estimate written plainly, row by row (what :func:`estimate_skew` computes with numpy; a test holds
    them equal)."""
    by_a: dict[tuple, list[End]] = {}
    for r in rows_a:
        by_a.setdefault(_conn_key(r), []).append(r)
    by_b: dict[tuple, list[End]] = {}
    for r in rows_b:
        by_b.setdefault(_conn_key(r), []).append(r)
    lo: int | None = None
    hi: int | None = None
    used = conns = 0
    for key, ra in by_a.items():
        rb = by_b.get((key[2], key[3], key[0], key[1]))
        if not rb:
            continue
        ta, tb = turns_of(ra), turns_of(rb)
        s = align(ta, tb)
        if s is None:
            continue
        low, up, n = turn_bounds(ta, tb, s, sw_a, sw_b)
        if n:
            conns += 1
            used += n
        if low is not None:
            lo = low if lo is None else max(lo, low)
        if up is not None:
            hi = up if hi is None else min(hi, up)
    if lo is None or hi is None or lo > hi:
        return None
    return SkewEstimate(host_a, host_b, (lo + hi) // 2, (hi - lo + 1) // 2, lo, hi, used, conns)


class _Turns:
    """Both ends' turns as arrays, connection by connection (a connection's id is shared by its two ends)."""

    def __init__(self, rows: Sequence[End], ids: dict[tuple, int], swap: bool, sw: SwitchIns | None):
        n = len(rows)
        cid = np.empty(n, dtype=np.int64)
        for k, r in enumerate(rows):
            key = (r.daddr, r.dport, r.saddr, r.sport) if swap else (r.saddr, r.sport, r.daddr, r.dport)
            cid[k] = ids.setdefault(key, len(ids))
        ts = np.fromiter((r.ts for r in rows), dtype=np.int64, count=n)
        nbytes = np.fromiter((r.bytes for r in rows), dtype=np.int64, count=n)
        send = np.fromiter((r.dir == "send" for r in rows), dtype=bool, count=n)
        tid = np.fromiter((r.tid for r in rows), dtype=np.int64, count=n)
        keep = nbytes > 0
        cid, ts, nbytes, send, tid = cid[keep], ts[keep], nbytes[keep], send[keep], tid[keep]
        order = np.lexsort((ts, cid))
        cid, ts, nbytes, send, tid = cid[order], ts[order], nbytes[order], send[order], tid[order]
        m = len(ts)
        brk = np.ones(m, dtype=bool)
        if m:
            brk[1:] = (cid[1:] != cid[:-1]) | (send[1:] != send[:-1])
        starts = np.flatnonzero(brk)
        ends = np.r_[starts[1:] - 1, m - 1] if m else starts
        self.cid, self.send, self.end, self.first = cid[starts], send[starts], ts[ends], ts[starts]
        self.bytes = np.add.reduceat(nbytes, starts) if m else nbytes
        self.tid = tid[starts]
        # when each turn's sending certainly started: after its thread's latest switch-in before the first row
        self.switch_in = np.zeros(len(starts), dtype=np.int64)
        for t, times in (sw or {}).items():
            mask = self.tid == t
            if not mask.any() or not times:
                continue
            arr = np.sort(np.asarray(times, dtype=np.int64))
            idx = np.searchsorted(arr, self.first[mask], side="right") - 1
            self.switch_in[mask] = np.where(idx >= 0, arr[np.clip(idx, 0, None)], 0)
        cs = np.flatnonzero(np.r_[True, self.cid[1:] != self.cid[:-1]]) if len(starts) else starts
        self.ranges = {int(self.cid[a]): (int(a), int(b)) for a, b in zip(cs, np.r_[cs[1:], len(starts)], strict=True)}

    def align(self, other: _Turns, ra: tuple[int, int], rb: tuple[int, int], max_shift: int = 16) -> int | None:
        """As :func:`align`, on arrays."""
        (a0, a1), (b0, b1) = ra, rb
        na, nb = a1 - a0, b1 - b0
        best: tuple[int, int] | None = None
        for s in range(-max_shift, max_shift + 1):
            first = max(0, -s)
            last = min(na, nb - s, first + ALIGN_WINDOW)
            if last <= first:
                continue
            i = np.arange(first, last)
            good = int(((self.send[a0 + i] != other.send[b0 + i + s])
                        & (self.bytes[a0 + i] == other.bytes[b0 + i + s])).sum())
            if good >= MIN_TURNS and good >= 0.8 * (last - first) and (best is None or good > best[0]):
                best = (good, s)
        return None if best is None else best[1]


def estimate_skew(host_a: str, rows_a: Sequence[End], host_b: str, rows_b: Sequence[End],
                  sw_a: SwitchIns | None = None, sw_b: SwitchIns | None = None) -> SkewEstimate | None:
    """theta = clock(host_b) - clock(host_a) from every connection seen from both ends; None without both bounds
    or when they contradict (not turn-taking). Turns and bounds in numpy: one Python step per connection."""
    ids: dict[tuple, int] = {}
    A = _Turns(rows_a, ids, False, sw_a)
    B = _Turns(rows_b, ids, True, sw_b)
    lows: list[int] = []
    ups: list[int] = []
    used = conns = 0
    for c, ra in A.ranges.items():
        rb = B.ranges.get(c)
        if rb is None:
            continue
        s = A.align(B, ra, rb)
        if s is None:
            continue
        a0, b0 = ra[0], rb[0]
        i = np.arange(1, ra[1] - a0)
        j = i + s
        ok = (j >= 1) & (j < rb[1] - b0)
        i, j = a0 + i[ok], b0 + j[ok]
        match = (A.bytes[i] == B.bytes[j]) & (A.send[i] != B.send[j]) & (A.send[i - 1] != B.send[j - 1])
        up = match & A.send[i] & ~A.send[i - 1] & ~B.send[j]
        low = match & ~A.send[i] & ~B.send[j - 1] & B.send[j]
        n = int(up.sum() + low.sum())
        if n:
            conns += 1
            used += n
        if up.any():
            start_a = np.maximum(A.end[i - 1], A.switch_in[i])
            ups.append(int((B.end[j] - start_a)[up].min()))
        if low.any():
            start_b = np.maximum(B.end[j - 1], B.switch_in[j])
            lows.append(int((start_b - A.end[i])[low].max()))
    if not lows or not ups or max(lows) > min(ups):
        return None
    lo, hi = max(lows), min(ups)
    return SkewEstimate(host_a, host_b, (lo + hi) // 2, (hi - lo + 1) // 2, lo, hi, used, conns)


# --- where rows come from ---------------------------------------------------------------------------------

class HostSource(Protocol):
    """Rows of several hosts: one store holding them all (a ClickHouse window copy), or one per host."""

    def hosts(self) -> list[str]: ...

    def store(self, host: str) -> Store: ...


_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,62}")


def _lit(host: str) -> str:
    if not _HOST.fullmatch(host):
        raise ValueError(f"not a host name: {host!r}")
    return f"'{host}'"


@dataclass
class HostView:
    """A Store that shows only one host's rows: every ``FROM <table>`` reads ``<table> WHERE host = ...``."""

    inner: Store
    host: str
    tables: frozenset[str]
    _from: re.Pattern = field(init=False, repr=False)

    def __post_init__(self) -> None:
        names = "|".join(sorted(map(re.escape, self.tables), key=len, reverse=True))
        self._from = re.compile(rf"\bFROM\s+({names})\b(?!\s*\()")

    def sql(self, sql: str) -> str:
        h = _lit(self.host)
        return self._from.sub(lambda m: f"FROM (SELECT * FROM {m.group(1)} WHERE host = {h}) AS {m.group(1)}", sql)

    def query(self, sql: str, fmt: str = "JSONEachRow") -> bytes:
        return self.inner.query(self.sql(sql), fmt)

    def query_rows(self, sql: str) -> list[dict]:
        return self.inner.query_rows(self.sql(sql))


@dataclass
class SharedSource:
    """Every host's rows in one store (``host`` column): the scale-out mode's ClickHouse tables, or a copy."""

    inner: Store

    def hosts(self) -> list[str]:
        rows = self.inner.query_rows("SELECT DISTINCT host FROM hosts UNION ALL SELECT DISTINCT host FROM sock_io")
        return sorted({str(r["host"]) for r in rows if r.get("host")})

    def store(self, host: str) -> Store:
        from kprobe.schemas.store_tables import table_defs

        return HostView(self.inner, host, frozenset(d.name for d in table_defs()))


@dataclass
class SeparateSource:
    """One store per host (e.g. each embedded recorder's own); names are the hosts."""

    stores: dict[str, Store]

    def hosts(self) -> list[str]:
        return sorted(self.stores)

    def store(self, host: str) -> Store:
        return self.stores[host]


# --- the cross-host answer --------------------------------------------------------------------------------

@dataclass
class Hop:
    host: str
    pid: int
    tid: int | None
    from_ns: int          # the window in this host's clock
    to_ns: int
    analysis: Analysis
    via: str = ""         # how the previous hop reached this one: the socket, seen from the previous host


@dataclass
class MissingHost:
    """A host the chain leads to whose rows for the window are not there, and what the heartbeats say."""

    host: str
    address: str
    last_heartbeat_ns: int
    last_event_ns: int
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "address": self.address, "last_heartbeat_ns": self.last_heartbeat_ns,
                "last_event_ns": self.last_event_ns, "reason": self.reason}


@dataclass
class CrossAnalysis:
    hops: list[Hop]
    skews: list[SkewEstimate] = field(default_factory=list)
    missing: list[MissingHost] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def root_host(self) -> str:
        return self.hops[-1].host

    @property
    def root_cause(self) -> Cause | None:
        return None if self.missing else self.hops[-1].analysis.root_cause

    def to_json(self) -> dict[str, Any]:
        return {
            "hops": [{"host": h.host, "pid": h.pid, "tid": h.tid, "from_ns": h.from_ns, "to_ns": h.to_ns, "via": h.via,
                      "analysis": h.analysis.to_json()} for h in self.hops],
            "root_host": self.root_host,
            "root_cause": self.root_cause.to_json(with_children=False) if self.root_cause else None,
            "skews": [s.to_json() for s in self.skews],
            "missing": [m.to_json() for m in self.missing],
            "notes": list(self.notes),
        }

    def render_text(self) -> str:
        parts = []
        for i, h in enumerate(self.hops):
            head = f"[{h.host}]" + (f" via {h.via}" if h.via else "")
            parts.append(f"{head}\n{render_text(h.analysis)}" if i == 0 else f"{head}\n{render_text(h.analysis)}")
        out = "\n\n".join(parts)
        for m in self.missing:
            out += f"\n\nDATA MISSING: host {m.host} ({m.address}): {m.reason}"
        for s in self.skews:
            out += f"\n{s.describe()}"
        for n in self.notes:
            out += f"\nnote: {n}"
        return out


_SOCK = re.compile(r"^(.+):(\d+) -> (.+):(\d+)$")


def remote_socket(a: Analysis) -> tuple[str, int, str, int] | None:
    """The socket of the chain's last link when it is a wait on a peer this host's rows do not hold."""
    if not a.chain:
        return None
    last = a.chain[-1]
    if last.kind != "remote_service" or last.culprit.pid is not None:
        return None
    for e in last.evidence:
        if isinstance(e, dict) and "socket" in e:
            m = _SOCK.match(str(e["socket"]))
            if m:
                return m.group(1), int(m.group(2)), m.group(3), int(m.group(4))
    return None


def _ends(store: Store, lo: int, hi: int, tuples: set[tuple[str, int, str, int]]) -> list[End]:
    """Socket rows of these connections in [lo, hi] (a tuple IN: one hash lookup per row), decoded in C."""
    out: list[End] = []
    todo = sorted(tuples)
    for k in range(0, len(todo), 4096):
        keys = ", ".join(f"('{_addr(s)}', {int(p)}, '{_addr(d)}', {int(q)})" for s, p, d, q in todo[k:k + 4096])
        body = store.query(f"SELECT ts, dir, bytes, saddr, sport, daddr, dport, tid FROM sock_io WHERE ts >= {int(lo)} "
                           f"AND ts <= {int(hi)} AND (saddr, sport, daddr, dport) IN ({keys}) "
                           "SETTINGS output_format_json_quote_64bit_integers = 0", "JSONCompactEachRow")
        out.extend(msgspec.json.decode(b"[" + b",".join(body.splitlines()) + b"]", type=list[End]))
    return out


def _switch_ins(store: Store, ends: list[End], lo: int, hi: int) -> SwitchIns:
    tids = sorted({e.tid for e in ends if e.dir == "send" and e.tid})[:256]
    if not tids:
        return {}
    calls = ", ".join(f"'{c}'" for c in SEND_CALLS)
    rows = store.query_rows(f"SELECT tid, end_ts FROM offcpu WHERE tid IN ({', '.join(map(str, tids))}) "
                            f"AND end_ts >= {int(lo)} AND end_ts <= {int(hi)} AND syscall NOT IN ({calls}) ORDER BY end_ts")
    out: SwitchIns = {}
    for r in rows:
        out.setdefault(int(r["tid"]), []).append(int(r["end_ts"]))
    return out


_ADDR = re.compile(r"[0-9A-Fa-f:.]{1,45}")


def _addr(a: str) -> str:
    if not _ADDR.fullmatch(a):
        raise ValueError(f"not an IP address: {a!r}")
    return a


def pair_skew(src: HostSource, host_a: str, host_b: str, lo: int, hi: int) -> SkewEstimate | None:
    """The offset between two hosts from the connections between them around [lo, hi] (host_a's clock)."""
    a_store, b_store = src.store(host_a), src.store(host_b)
    w0, w1 = lo - SKEW_PAIRS_NS, hi + SKEW_PAIRS_NS
    rows = a_store.query_rows(f"SELECT DISTINCT saddr, sport, daddr, dport FROM sock_io WHERE ts >= {int(w0)} "
                              f"AND ts <= {int(w1)} AND sport > 0 AND dport > 0 LIMIT 10000")
    mine = {(str(r["saddr"]), int(r["sport"]), str(r["daddr"]), int(r["dport"])) for r in rows}
    rows = b_store.query_rows(f"SELECT DISTINCT saddr, sport, daddr, dport FROM sock_io WHERE ts >= {int(w0 - PEER_SEARCH_NS)} "
                              f"AND ts <= {int(w1 + PEER_SEARCH_NS)} AND sport > 0 AND dport > 0 LIMIT 10000")
    theirs = {(str(r["saddr"]), int(r["sport"]), str(r["daddr"]), int(r["dport"])) for r in rows}
    shared = {t for t in mine if (t[2], t[3], t[0], t[1]) in theirs}
    if not shared:
        return None
    ra = _ends(a_store, w0, w1, shared)
    b0, b1 = w0 - PEER_SEARCH_NS, w1 + PEER_SEARCH_NS
    rb = _ends(b_store, b0, b1, {(d, q, s, p) for s, p, d, q in shared})
    return estimate_skew(host_a, ra, host_b, rb, _switch_ins(a_store, ra, w0, w1), _switch_ins(b_store, rb, b0, b1))


def find_peer(src: HostSource, here: str, sock: tuple[str, int, str, int], lo: int, hi: int
              ) -> tuple[str, int, int] | None:
    """(host, tgid, tid) of the other end of ``sock`` (saddr, sport, daddr, dport as seen from ``here``)."""
    s, p, d, q = sock
    for h in src.hosts():
        if h == here:
            continue
        rows = src.store(h).query_rows(
            f"SELECT tgid, tid, count() AS n FROM sock_io WHERE saddr = '{_addr(d)}' AND sport = {int(q)} "
            f"AND daddr = '{_addr(s)}' AND dport = {int(p)} AND ts >= {int(lo - PEER_SEARCH_NS)} "
            f"AND ts <= {int(hi + PEER_SEARCH_NS)} GROUP BY tgid, tid ORDER BY n DESC LIMIT 1")
        if rows:
            return h, int(rows[0]["tgid"]), int(rows[0]["tid"])
    return None


def missing_owner(src: HostSource, here: str, addr: str, port: int, lo: int, hi: int) -> MissingHost | None:
    """The host that owns ``addr`` (its own rows, any time, carry it as a local address) and what its heartbeats
    say about the window; None when no recorded host ever had that address (not recorded, NAT or a VIP)."""
    for h in src.hosts():
        if h == here:
            continue
        st = src.store(h)
        # socket I/O only: it follows the agent's own processes, where TCP state changes are host-wide (on one
        # kernel shared by several "nodes" every agent sees every namespace's connections change state)
        seen = st.query_rows(f"SELECT max(ts) AS t FROM sock_io WHERE saddr = '{_addr(addr)}' AND sport = {int(port)}")
        if not int((seen or [{}])[0].get("t") or 0):
            continue
        beats = st.query_rows("SELECT max(ts) AS t, argMax(last_event_ts, ts) AS e, argMax(final, ts) AS f, "
                              "argMax(interval_ms, ts) AS i FROM hosts")
        b = beats[0] if beats else {}
        last_beat, last_event = int(b.get("t") or 0), int(b.get("e") or 0)
        interval_ns = int(b.get("i") or 0) * 1_000_000
        if last_beat and last_beat + 2 * interval_ns < hi:
            how = "stopped cleanly" if int(b.get("f") or 0) else "stopped without a final heartbeat (killed or cut off)"
            reason = (f"its agent {how}: last heartbeat {(hi - last_beat) / 1e9:.1f} s before the window's end, its "
                      f"newest event {max(0, hi - last_event) / 1e9:.1f} s before it; the wait on {addr}:{port} "
                      "cannot be explained from what was recorded")
        elif not last_beat:
            reason = f"no heartbeat from its agent at all; the wait on {addr}:{port} cannot be explained"
        else:
            reason = (f"its agent was recording (heartbeats through the window) but holds no rows of the connection "
                      f"to {addr}:{port} in it: the serving process is outside its filter or its rows were lost "
                      "(kprobe stats on that host)")
        return MissingHost(h, f"{addr}:{port}", last_beat, last_event, reason)
    return None


def coverage(src: HostSource, host: str, addr: str, lo: int, hi: int) -> MissingHost | None:
    """A MissingHost when ``host``'s heartbeats end before ``hi`` (its clock): its agent stopped or was cut off
    inside the window (or has not reported past it yet: ask again later), so what its rows show there is
    incomplete. None when covered, or when the host writes no heartbeats (an older agent: nothing to judge by).
    A beat is written after the rows drained before it, so a beat after ``hi`` means the window's rows were
    sent (Kafka delivery and ingest permitting: the agents' and the dataflow's counters say)."""
    rows = src.store(host).query_rows("SELECT max(ts) AS t, argMax(last_event_ts, ts) AS e, argMax(final, ts) AS f, "
                                      "argMax(interval_ms, ts) AS i, count() AS n FROM hosts")
    b = rows[0] if rows else {}
    if not int(b.get("n") or 0):
        return None
    last_beat, last_event = int(b.get("t") or 0), int(b.get("e") or 0)
    if last_beat >= hi:     # a beat after the window: the agent was alive through it (rows precede their beat)
        return None
    how = "stopped cleanly" if int(b.get("f") or 0) else "stopped without a final heartbeat (killed or cut off)"
    return MissingHost(host, addr, last_beat, last_event,
                       f"its agent {how} inside the window: last heartbeat {(hi - last_beat) / 1e9:.1f} s before the "
                       f"window's end, newest event {max(0, hi - last_event) / 1e9:.1f} s before it; what happened "
                       "there after that is unknown, so no cause is named on that host")


def why_across(src: HostSource, host: str, pid: int, from_ns: int, to_ns: int, tid: int | None = None,
               max_hops: int = MAX_HOPS) -> CrossAnalysis:
    """``why`` on host ``host`` (its clock), followed into the hosts that served its remote waits."""
    a = why(src.store(host), pid, from_ns, to_ns, tid)
    out = CrossAnalysis([Hop(host, pid, tid, from_ns, to_ns, a)])
    seen = {(host, pid)}
    while len(out.hops) < max_hops:
        cur = out.hops[-1]
        sock = remote_socket(cur.analysis)
        if sock is None:
            break
        via = f"{sock[0]}:{sock[1]} -> {sock[2]}:{sock[3]}"
        peer = find_peer(src, cur.host, sock, cur.from_ns, cur.to_ns)
        if peer is None:
            m = missing_owner(src, cur.host, sock[2], sock[3], cur.from_ns, cur.to_ns)
            if m is not None:
                out.missing.append(m)
            else:
                out.notes.append(f"no recorded host holds the other end of {via} (not recorded, or NAT / a service "
                                 "VIP translated it: the 4-tuples differ)")
            break
        ph, ptgid, ptid = peer
        if (ph, ptgid) in seen:
            out.notes.append(f"cycle: {ph} PID {ptgid} already on the chain")
            break
        seen.add((ph, ptgid))
        sk = pair_skew(src, cur.host, ph, cur.from_ns, cur.to_ns)
        if sk is not None:
            out.skews.append(sk)
            off, margin = sk.offset_ns, sk.bound_ns
        else:
            off, margin = 0, NO_ESTIMATE_MARGIN_NS
            out.notes.append(f"no clock offset estimate between {cur.host} and {ph} (no turn-taking exchange seen "
                             f"from both ends): their times compared with a {margin / 1e6:g} ms margin")
        lo, hi = cur.from_ns + off - margin, cur.to_ns + off + margin
        gap = coverage(src, ph, f"{sock[2]}:{sock[3]}", lo, hi)
        if gap is not None:
            out.missing.append(gap)
            break
        try:
            pa = why(src.store(ph), ptgid, lo, hi, ptid)
        except NoDataError as e:
            out.notes.append(f"{ph}: {e}")
            m = missing_owner(src, cur.host, sock[2], sock[3], cur.from_ns, cur.to_ns)
            if m is not None:
                out.missing.append(m)
            break
        out.hops.append(Hop(ph, ptgid, ptid, lo, hi, pa, via))
    return out
