"""A FIX 4.4 session as simplefix encodes it, with arrival times: orders acked, two filled, one
rejected, one PossDup resend, one cancel. For tests that need decoded FIX spans in a store."""

from __future__ import annotations

import simplefix

from kprobe.protocols import Direction


def _m(msg_type: str, seq: int, sender: str, target: str, **tags: str) -> bytes:
    m = simplefix.FixMessage()
    m.append_pair(8, "FIX.4.4", header=True)
    m.append_pair(35, msg_type, header=True)
    m.append_pair(49, sender, header=True)
    m.append_pair(56, target, header=True)
    m.append_pair(34, seq, header=True)
    for k, v in tags.items():
        m.append_pair(int(k[1:]), v)
    return m.encode()


def fix_conversation(t0: int = 1_796_684_000_000_000_000) -> list[tuple[Direction, bytes, int]]:
    out: list[tuple[Direction, bytes, int]] = []
    cs, ss = 0, 0
    t = t0

    def c(kind: str, **tags: str) -> None:
        nonlocal cs, t
        cs += 1
        t += 100_000
        out.append((Direction.TO_SERVER, _m(kind, cs, "BROKER", "EXCH", **tags), t))

    def s(kind: str, delay_ns: int = 50_000, **tags: str) -> None:
        nonlocal ss, t
        ss += 1
        t += delay_ns
        out.append((Direction.TO_CLIENT, _m(kind, ss, "EXCH", "BROKER", **tags), t))

    c("A")
    s("A")
    for i in range(5):
        cl = f"ORD-{i}" + ("-fill" if i % 2 else "")
        c("D", t11=cl, t55="EUR", t54="1", t38="100")
        s("8", delay_ns=40_000 + 10_000 * i, t11=cl, t37=f"O{i}", t150="0", t39="0")
        if i % 2:
            s("8", t11=cl, t37=f"O{i}", t150="F", t39="1")
            s("8", t11=cl, t37=f"O{i}", t150="F", t39="2")
    c("D", t11="ORD-bad", t55="BAD")
    s("8", t11="ORD-bad", t37="X", t150="8", t39="8")
    c("D", t11="ORD-dup", t43="Y", t55="EUR")
    s("8", t11="ORD-dup", t37="O9", t150="0", t39="0")
    c("F", t11="CXL-0", t41="ORD-0", t55="EUR")
    s("8", t11="CXL-0", t41="ORD-0", t37="O0", t150="4", t39="4")
    return out
