"""The clock offset between two hosts from request/response turns: the true offset is always inside the
stated interval (synthetic exchanges with random delays, where the truth is known exactly), turns are
matched by bytes, and what breaks turn-taking gets no estimate."""

from __future__ import annotations

import random

from kprobe.causal.hosts import End, align, estimate_skew, turns_of

A, B = ("10.0.0.1", 40000), ("10.0.0.2", 8000)


def _exchange(theta: int, n: int, seed: int, pipelined: bool = False, switch_ins: dict | None = None
              ) -> tuple[list[End], list[End]]:
    """Client on A, server on B (B's clock = true + theta). Sends are stamped when the call returns, which
    may be after the peer received the bytes (as on loopback/veth): the estimate must not depend on them."""
    rnd = random.Random(seed)
    a: list[End] = []
    b: list[End] = []
    t = 1_000_000_000
    for i in range(n):
        size_req, size_resp = rnd.randint(20, 200), rnd.randint(20, 2000)
        send_ret = t + rnd.randint(5_000, 40_000)            # the send call returns late
        arrive = t + rnd.randint(10_000, 100_000)
        b_recv = arrive + rnd.randint(1_000, 30_000)
        a.append(End(send_ret, "send", size_req, *A, *B, tid=11))
        if switch_ins is not None:       # the client thread woke from its think-time sleep just before sending
            switch_ins.setdefault("a", {}).setdefault(11, []).append(t - rnd.randint(1_000, 20_000))
        b.append(End(b_recv + theta, "recv", size_req, *B, *A))
        b_send_start = b_recv + rnd.randint(10_000, 3_000_000)
        if pipelined and i % 2:
            b_send_start = t - 50_000                         # answered before it was asked: not turn-taking
        resp_arrive = b_send_start + rnd.randint(10_000, 100_000)
        b.append(End(b_send_start + rnd.randint(5_000, 40_000) + theta, "send", size_resp, *B, *A, tid=22))
        if switch_ins is not None:       # the server thread woke (its own backend answered) just before replying
            switch_ins.setdefault("b", {}).setdefault(22, []).append(b_send_start - rnd.randint(1_000, 20_000) + theta)
        a_recv = resp_arrive + rnd.randint(1_000, 30_000)
        a.append(End(a_recv, "recv", size_resp, *A, *B))
        t = a_recv + rnd.randint(20_000, 2_000_000)           # think time before the next request
    return a, b


def test_true_offset_lies_within_the_stated_bound() -> None:
    for seed in range(40):
        theta = random.Random(seed).randint(-20_000_000, 20_000_000)
        a, b = _exchange(theta, 30, seed)
        est = estimate_skew("a", a, "b", b)
        assert est is not None
        assert est.lower_ns <= theta <= est.upper_ns, (seed, theta, est)
        assert abs(est.offset_ns - theta) <= est.bound_ns
        assert est.bound_ns < 1_000_000, est     # 30 exchanges: the tightest think and reply times bound it
        assert est.connections == 1 and est.turns >= 50


def test_the_reverse_pair_gives_the_opposite_offset() -> None:
    a, b = _exchange(3_000_000, 20, 7)
    fwd, rev = estimate_skew("a", a, "b", b), estimate_skew("b", b, "a", a)
    assert fwd is not None and rev is not None
    assert (fwd.lower_ns, fwd.upper_ns) == (-rev.upper_ns, -rev.lower_ns)


def test_turns_are_matched_by_bytes_when_one_end_missed_the_start() -> None:
    a, b = _exchange(-4_000_000, 20, 3)
    late_b = b[4:]                                           # B's recording began two exchanges later
    ta, tb = turns_of(a), turns_of(late_b)
    assert align(ta, tb) == -4
    est = estimate_skew("a", a, "b", late_b)
    assert est is not None and est.lower_ns <= -4_000_000 <= est.upper_ns


def test_no_estimate_without_turn_taking_or_without_the_other_end() -> None:
    a, b = _exchange(1_000_000, 20, 5, pipelined=True)
    assert estimate_skew("a", a, "b", b) is None
    a, _ = _exchange(1_000_000, 20, 5)
    other = [End(r.ts, r.dir, r.bytes, "10.9.9.9", 1, "10.9.9.8", 2) for r in a]
    assert estimate_skew("a", a, "b", other) is None


def test_switch_ins_before_sends_tighten_the_bound_and_keep_it_true() -> None:
    for seed in range(20):
        theta = random.Random(seed).randint(-20_000_000, 20_000_000)
        sw: dict = {}
        a, b = _exchange(theta, 30, seed, switch_ins=sw)
        loose = estimate_skew("a", a, "b", b)
        tight = estimate_skew("a", a, "b", b, sw["a"], sw["b"])
        assert loose is not None and tight is not None
        assert tight.lower_ns <= theta <= tight.upper_ns, (seed, theta, tight)
        assert tight.bound_ns <= loose.bound_ns and tight.bound_ns < 150_000, (tight, loose)


def test_the_numpy_estimate_equals_the_row_by_row_one() -> None:
    from kprobe.causal.hosts import estimate_skew_reference

    for seed in range(12):
        sw: dict = {}
        theta = random.Random(seed).randint(-9_000_000, 9_000_000)
        a, b = _exchange(theta, 25, seed, switch_ins=sw if seed % 2 else None)
        cut = b[seed % 5:]                                      # some with a late start on one end
        a2, b2 = _exchange(theta, 15, seed + 100)               # a second connection on other ports
        a2 = [End(r.ts, r.dir, r.bytes, r.saddr, 40001, r.daddr, r.dport, r.tid) for r in a2]
        b2 = [End(r.ts, r.dir, r.bytes, r.saddr, r.sport, r.daddr, 40001, r.tid) for r in b2]
        args = ("a", a + a2, "b", cut + b2, sw.get("a"), sw.get("b"))
        assert estimate_skew(*args) == estimate_skew_reference(*args), seed
