"""Decoding cost of the protocol decoders: MB/s and µs per message, per protocol.

Each protocol's stream is built by its own generator where one exists (pyiso8583, simplefix) or
written as the protocol defines it (HTTP/1.1, PostgreSQL extended query, ISO 20022 pacs.008 and
pacs.002), then fed to a fresh decoder in 4 KiB pieces, as payload capture delivers it (one
record per read or write, at most KP_PAYLOAD_LEN bytes). Prints one line per protocol; --json
for tools. Times are this process's CPU time, not wall time: on a shared host the wait for a CPU
would otherwise be most of the number.

--path capture measures the general path a captured call takes instead of the decoder alone: one
record per message (request/response traffic: each read or write is one message), each a
``Piece`` handed to the ``Assembler`` (connection lookup, direction, decoder), every exchange made a
span row (ids, attributes as JSON) and the rows turned into the store's columns, per 1000 rows.

    python bench/decoders.py [--messages 20000] [--piece 4096] [--path decoder|capture] [--json]
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "protocols"))

from kprobe.protocols import Direction, new_decoder  # noqa: E402

C, S = Direction.TO_SERVER, Direction.TO_CLIENT


def _http(n: int) -> list[tuple[Direction, bytes]]:
    out = []
    for i in range(n):
        body = json.dumps({"payment_id": f"PAY-{i}", "amount": "12.50", "currency": "EUR"}).encode()
        out.append((C, b"POST /payments/%d HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
                       b"Content-Length: %d\r\n\r\n%s" % (i, len(body), body)))
        resp = json.dumps({"payment_id": f"PAY-{i}", "status": "accepted"}).encode()
        out.append((S, b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                       % (len(resp), resp)))
    return out


def _pg_msg(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def _pg(n: int) -> list[tuple[Direction, bytes]]:
    startup = b"user\0bench\0database\0bench\0\0"
    out = [(C, struct.pack("!ii", len(startup) + 8, 196608) + startup),
           (S, _pg_msg(b"R", struct.pack("!i", 0)) + _pg_msg(b"Z", b"I"))]
    for i in range(n):
        q = b"SELECT abalance FROM pgbench_accounts WHERE aid = $1\0"
        out.append((C, _pg_msg(b"P", b"\0" + q + b"\0\0") + _pg_msg(b"B", b"\0\0\0\0\0\1\0\0\0\x05" + b"%05d" % (i % 99999)
                   + b"\0\0") + _pg_msg(b"D", b"P\0") + _pg_msg(b"E", b"\0\0\0\0\0") + _pg_msg(b"S", b"")))
        out.append((S, _pg_msg(b"1", b"") + _pg_msg(b"2", b"") + _pg_msg(b"T", b"\0\1abalance\0" + b"\0" * 18)
                   + _pg_msg(b"D", b"\0\1\0\0\0\x04" + b"1234") + _pg_msg(b"C", b"SELECT 1\0") + _pg_msg(b"Z", b"I")))
    return out


def _fix(n: int) -> list[tuple[Direction, bytes]]:
    import simplefix

    def m(t: str, seq: int, s: str, d: str, **tags: str) -> bytes:
        x = simplefix.FixMessage()
        for tag, v in ((8, "FIX.4.4"), (35, t), (49, s), (56, d), (34, seq), (52, "20261207-15:00:00.000000")):
            x.append_pair(tag, v, header=True)
        for k, v in tags.items():
            x.append_pair(int(k[1:]), v)
        return x.encode()

    out = []
    for i in range(n):
        out.append((C, m("D", i + 1, "BROKER", "EXCH", t11=f"ORD-{i}", t55="EUR/USD", t54="1", t38="1000000",
                        t40="2", t44="1.0812", t60="20261207-15:00:00.000")))
        out.append((S, m("8", i + 1, "EXCH", "BROKER", t11=f"ORD-{i}", t37=f"O{i}", t17=f"E{i}", t150="0", t39="0",
                        t55="EUR/USD", t54="1", t151="1000000", t14="0", t6="0")))
    return out


def _iso8583(n: int) -> list[tuple[Direction, bytes]]:
    import iso8583
    from iso8583.specs import default_ascii as spec

    out = []
    for i in range(n):
        req, _ = iso8583.encode({"t": "0200", "2": "4111111111111111", "3": "000000", "4": "000000001250",
                                 "7": "1207150000", "11": f"{i % 999999:06d}", "35": "4111111111111111=2512101",
                                 "41": "TERM0001", "42": "MERCHANT0000001", "49": "978"}, spec)
        resp, _ = iso8583.encode({"t": "0210", "11": f"{i % 999999:06d}", "37": f"{i:012d}", "39": "00",
                                  "41": "TERM0001"}, spec)
        out.append((C, len(req).to_bytes(2, "big") + bytes(req)))
        out.append((S, len(resp).to_bytes(2, "big") + bytes(resp)))
    return out


def _iso20022(n: int) -> list[tuple[Direction, bytes]]:
    from iso20022_messages import pacs002, pacs008

    out = []
    for i in range(n):
        uetr = f"eb6305c9-1f7f-49de-aed0-{i:012d}"
        out.append((C, pacs008(f"M{i}", f"E2E-{i}", uetr, "250.00")))
        out.append((S, pacs002(f"R{i}", f"M{i}", f"E2E-{i}", uetr, "ACSC")))
    return out


GENERATORS = {"http": _http, "postgresql": _pg, "fix": _fix, "iso8583": _iso8583, "iso20022": _iso20022}


def bench(protocol: str, n: int, piece: int) -> dict[str, float]:
    conv = GENERATORS[protocol](n)
    # coalesce each direction's consecutive messages into pieces of `piece` bytes, as reads deliver them
    pieces: list[tuple[Direction, bytes]] = []
    for d, data in conv:
        for i in range(0, len(data), piece):
            pieces.append((d, data[i:i + piece]))
    total = sum(len(p) for _, p in pieces)
    dec = new_decoder(protocol)
    t0 = time.process_time()
    ts = 0
    exchanges = 0
    for d, data in pieces:
        ts += 1000
        exchanges += len(dec.feed(d, data, ts))
    dt = time.process_time() - t0
    assert dec.stats.malformed == 0, (protocol, dec.stats)
    messages = dec.stats.messages
    return {"protocol": protocol, "bytes": total, "messages": messages, "exchanges": exchanges, "seconds": dt,
            "mb_per_s": total / dt / 1e6, "us_per_message": dt / max(messages, 1) * 1e6,
            "us_per_mb": dt / (total / 1e6) * 1e6}


def bench_capture(protocol: str, n: int, piece: int) -> dict[str, float]:
    """The capture path: Piece -> Assembler -> decoder -> span rows -> columns, one record per message."""
    from kprobe.protocols.assembler import Assembler, Piece

    conv = GENERATORS[protocol](n)
    asm = Assembler("bench-host", {9000: protocol}, lambda tgid: "bench-svc")
    records = [(d == C, data[i:i + piece], len(data)) for d, data in conv for i in range(0, len(data), piece)]
    total = sum(len(r[1]) for r in records)
    t0 = time.process_time()
    ts = 0
    rows = 0
    for k, (outbound, data, size) in enumerate(records):
        ts += 1000
        asm.add(Piece(ts, 4242, 4242, 0xFFFF8880DEADBEEF, outbound, data, min(size, len(data)),
                      "127.0.0.1", 51234, "127.0.0.1", 9000))
        if k % 1000 == 999:
            rows += len(asm.rows)
            asm.rows.columns()
    rows += len(asm.rows)
    asm.rows.columns()
    dt = time.process_time() - t0
    stats = asm.protocol_stats()[protocol]
    assert stats["malformed"] == 0 and asm.decoder_errors == 0, (protocol, stats)
    messages = stats["messages"]
    return {"protocol": protocol, "bytes": total, "messages": messages, "exchanges": rows, "seconds": dt,
            "mb_per_s": total / dt / 1e6, "us_per_message": dt / max(messages, 1) * 1e6,
            "us_per_mb": dt / (total / 1e6) * 1e6}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=20000, help="request/response pairs per protocol")
    ap.add_argument("--piece", type=int, default=4096, help="bytes per captured read/write (default: %(default)s)")
    ap.add_argument("--path", choices=("decoder", "capture"), default="decoder",
                    help="the decoder alone, or the capture path around it (default: %(default)s)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    run = bench if args.path == "decoder" else bench_capture
    results = [run(p, args.messages, args.piece) for p in GENERATORS]
    if args.json:
        print(json.dumps(results))
        return 0
    print(f"{'protocol':<11} {'messages':>9} {'MB':>7} {'MB/s':>7} {'µs/msg':>8} {'ms/MB':>8}")
    for r in results:
        print(f"{r['protocol']:<11} {r['messages']:>9} {r['bytes'] / 1e6:>7.1f} {r['mb_per_s']:>7.1f} "
              f"{r['us_per_message']:>8.2f} {r['us_per_mb'] / 1000:>8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
