"""FIX decoding of a real session over TCP: an acceptor and an initiator built with simplefix
(PyPI), in FIX 4.2, 4.4 and FIXT 1.1, every order's lifecycle reconstructed from the bytes."""

from __future__ import annotations

import socket
import threading
import time
from datetime import UTC, datetime

import pytest
import simplefix
from wire_relay import Relay, replay, replay_split

from kprobe.protocols import Direction, new_decoder
from kprobe.protocols.fix import checksum

SECRET_ACCOUNT = "ACCT-SECRET-991"


def _msg(begin: str, msg_type: str, seq: int, sender: str, target: str, **tags: str) -> simplefix.FixMessage:
    m = simplefix.FixMessage()
    m.append_pair(8, begin, header=True)
    m.append_pair(35, msg_type, header=True)
    m.append_pair(49, sender, header=True)
    m.append_pair(56, target, header=True)
    m.append_pair(34, seq, header=True)
    m.append_utc_timestamp(52, precision=6, header=True)
    for tag, value in tags.items():
        m.append_pair(int(tag[1:]), value)
    return m


def _parse_ts(value: bytes) -> int:
    dt = datetime.strptime(value.decode(), "%Y%m%d-%H:%M:%S.%f").replace(tzinfo=UTC)
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


class Acceptor:
    """A tiny exchange: acks orders (New), fills them, cancels and replaces on request, rejects
    orders for symbol BAD, and records its receive time and the SendingTime of each ack."""

    def __init__(self, begin: str) -> None:
        self.begin = begin
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.ack_stamps: dict[str, tuple[int, int]] = {}  # ClOrdID -> (received ns, ack SendingTime ns)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conn, _ = self.listener.accept()
        parser = simplefix.FixParser()
        seq = 0
        order_no = 0

        def send(msg_type: str, **tags: str) -> simplefix.FixMessage:
            nonlocal seq
            seq += 1
            m = _msg(self.begin, msg_type, seq, "EXCH", "BROKER", **tags)
            conn.sendall(m.encode())
            return m

        with conn:
            while data := conn.recv(65536):
                received = time.time_ns()
                parser.append_buffer(data)
                while (m := parser.get_message()) is not None:
                    t = m.get(35).decode()
                    if t == "A":
                        send("A", t98="0", t108="30")
                    elif t == "1":
                        send("0", t112=m.get(112).decode())
                    elif t == "D":
                        cl = m.get(11).decode()
                        order_no += 1
                        if m.get(55) == b"BAD":
                            send("8", t37=f"O{order_no}", t11=cl, t17=f"E{seq}", t150="8", t39="8", t55="BAD",
                                 t54="1", t58="unknown symbol")
                            continue
                        ack = send("8", t37=f"O{order_no}", t11=cl, t17=f"E{seq}", t150="0", t39="0",
                                   t55=m.get(55).decode(), t54="1")
                        self.ack_stamps[cl] = (received, _parse_ts(ack.get(52)))
                        if cl.endswith("-fill"):
                            send("8", t37=f"O{order_no}", t11=cl, t17=f"E{seq}", t150="F", t39="1", t55="EUR", t54="1")
                            send("8", t37=f"O{order_no}", t11=cl, t17=f"E{seq}", t150="F", t39="2", t55="EUR", t54="1")
                    elif t == "F":
                        send("8", t37="O?", t11=m.get(11).decode(), t41=m.get(41).decode(), t17=f"E{seq}",
                             t150="4", t39="4", t55="EUR", t54="1")
                    elif t == "G":
                        if m.get(41) == b"unknown":
                            send("9", t37="NONE", t11=m.get(11).decode(), t41="unknown", t39="8", t434="2", t102="1")
                        else:
                            send("8", t37="O?", t11=m.get(11).decode(), t41=m.get(41).decode(), t17=f"E{seq}",
                                 t150="5", t39="0", t55="EUR", t54="1")
                    elif t == "5":
                        send("5")
                        return


def _session(port: int, begin: str) -> list[str]:
    """The initiator: logon, orders, a test request, cancels, a replace, a rejected replace, logout."""
    seq = 0
    cls: list[str] = []
    with socket.create_connection(("127.0.0.1", port)) as c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        parser = simplefix.FixParser()

        def send(msg_type: str, **tags: str) -> None:
            nonlocal seq
            seq += 1
            c.sendall(_msg(begin, msg_type, seq, "BROKER", "EXCH", **tags).encode())

        def answers(n: int) -> list[simplefix.FixMessage]:
            got = []
            while len(got) < n:
                m = parser.get_message()
                if m is None:
                    parser.append_buffer(c.recv(65536))
                    continue
                got.append(m)
            return got

        logon = {"t98": "0", "t108": "30"} | ({"t1137": "9"} if begin == "FIXT.1.1" else {})
        send("A", **logon)
        answers(1)
        order = {"t55": "EUR", "t54": "1", "t38": "100", "t40": "2", "t44": "1.0812", "t1": SECRET_ACCOUNT}
        for i in range(5):
            cl = f"ORD-{i}" + ("-fill" if i % 2 else "")
            cls.append(cl)
            send("D", t11=cl, t60="20261207-15:00:00", **order)
            answers(3 if i % 2 else 1)
        send("D", t11="ORD-bad", **{**order, "t55": "BAD"})
        answers(1)
        send("D", t11="ORD-dup", t43="Y", t122="20261207-15:00:00", **order)  # a possible-duplicate resend
        answers(1)
        send("1", t112="ping-1")
        answers(1)
        send("F", t11="CXL-0", t41="ORD-0", t55="EUR", t54="1")
        answers(1)
        send("G", t11="RPL-2", t41="ORD-2", t55="EUR", t54="1", t38="50", t40="2", t44="1.0811")
        answers(1)
        send("G", t11="RPL-x", t41="unknown", t55="EUR", t54="1", t38="50", t40="2")
        answers(1)
        send("5")
        answers(1)
    return cls


@pytest.fixture(params=["FIX.4.2", "FIX.4.4", "FIXT.1.1"])
def session(request):
    acceptor = Acceptor(request.param)
    relay = Relay(acceptor.listener.getsockname())
    cls = _session(relay.port, request.param)
    assert relay.connections[0].closed.wait(10)
    acceptor.thread.join(10)
    yield acceptor, cls, relay.connections[0]
    relay.close()
    acceptor.listener.close()


def _by_name(exchanges):
    out: dict[str, list] = {}
    for e in exchanges:
        out.setdefault(e.name, []).append(e)
    return out


def test_every_order_lifecycle_is_reconstructed(session) -> None:
    acceptor, cls, conn = session
    d = new_decoder("fix")
    exchanges = replay(d, conn)
    assert d.stats.malformed == d.stats.unanswered == d.stats.unmatched == 0
    names = _by_name(exchanges)
    assert len(names["Logon"]) == 1 and len(names["TestRequest"]) == 1
    orders = names["NewOrderSingle"]
    assert [e.attributes["fix.cl_ord_id"] for e in orders] == [*cls, "ORD-bad", "ORD-dup"]
    assert [e.error for e in orders] == [False] * len(cls) + [True, False]
    assert all(e.attributes["fix.order_id"].startswith("O") for e in orders)
    assert [e.latency_excluded for e in orders] == [False] * (len(cls) + 1) + [True]  # PossDup excluded
    fills = names["ExecutionReport Trade"]
    assert [(e.attributes["fix.cl_ord_id"], e.attributes["fix.ord_status"]) for e in fills] == [
        ("ORD-1-fill", "1"), ("ORD-1-fill", "2"), ("ORD-3-fill", "1"), ("ORD-3-fill", "2")]
    assert all(e.attributes["fix.order_start_ns"] == orders[1 if "ORD-1" in e.attributes["fix.cl_ord_id"] else 3].start_ns
               for e in fills)
    (cancel,) = names["OrderCancelRequest"]
    assert cancel.attributes["fix.orig_cl_ord_id"] == "ORD-0" and cancel.attributes["fix.exec_type"] == "4"
    replaces = names["OrderCancelReplaceRequest"]
    assert [(e.attributes["fix.cl_ord_id"], e.error) for e in replaces] == [("RPL-2", False), ("RPL-x", True)]
    assert replaces[1].attributes["fix.response.msg_type"] == "9"
    for e in exchanges:
        assert SECRET_ACCOUNT not in str(e.attributes)


def test_order_to_ack_latency_against_the_engines_own_stamps(session) -> None:
    """The relay sees the order before the engine and the ack after it: decoded latency must
    contain the engine's receive-to-SendingTime, plus only the relay's two loopback hops."""
    acceptor, cls, conn = session
    orders = {e.attributes["fix.cl_ord_id"]: e for e in replay(new_decoder("fix"), conn) if e.name == "NewOrderSingle"}
    for cl in cls:
        received, sent = acceptor.ack_stamps[cl]
        ours = orders[cl].end_ns - orders[cl].start_ns
        engine = sent - received
        assert ours >= engine - 1000, (cl, ours, engine)  # SendingTime has microsecond resolution
        assert ours - engine < 5_000_000, (cl, ours, engine)
        assert orders[cl].start_ns <= received and orders[cl].end_ns >= sent - 1000


@pytest.mark.parametrize("sizes", [[1], [5, 2, 11], [200]])
def test_split_anywhere(session, sizes) -> None:
    _, _, conn = session
    whole = [(e.name, e.attributes.get("fix.cl_ord_id")) for e in replay(new_decoder("fix"), conn)]
    split = [(e.name, e.attributes.get("fix.cl_ord_id")) for e in replay_split(new_decoder("fix"), conn, sizes)]
    assert split == whole


def test_bad_checksum_is_counted_and_the_next_message_decodes() -> None:
    d = new_decoder("fix")
    good = _msg("FIX.4.4", "D", 1, "A", "B", t11="X1", t55="EUR").encode()
    bad = bytearray(good)
    bad[-4:-1] = b"%03d" % ((checksum(good[: good.rindex(b"10=")]) + 1) % 256)
    d.feed(Direction.TO_SERVER, bytes(bad) + b"junk" + good, 1)
    ack = _msg("FIX.4.4", "8", 1, "B", "A", t11="X1", t150="0", t39="0", t37="O1").encode()
    out = d.feed(Direction.TO_CLIENT, ack, 2)
    assert d.stats.malformed >= 1
    assert [e.attributes["fix.cl_ord_id"] for e in out] == ["X1"]
