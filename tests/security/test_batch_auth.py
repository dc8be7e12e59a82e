"""Batches on the topics are authenticated with the deployment's key: nobody else can forge one or
pre-claim the id of a real one (the agent's real Kafka sink and the ingest dataflow's real decode step)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from kprobe.dataflows.ingest import decode
from kprobe.dataflows.kafka_io import RawMessage
from kprobe.schemas.tables import BY_NAME
from kprobe.sinks.kafka import KafkaSink, KafkaSinkConfig
from kprobe.topics import wire

KEY = b"0123456789abcdef-deployment-key"


def _cols(n: int) -> dict[str, np.ndarray]:
    et = BY_NAME["offcpu"]
    r = np.zeros(n, dtype=et.record)
    r["tgid"] = 7
    cols = et.columns(r, 1_764_000_000 * 10**9)
    cols["host"] = np.full(n, "node-1", dtype=object)
    cols["service"] = np.full(n, "svc", dtype=object)
    return cols


def _raw(value: bytes) -> RawMessage:
    return RawMessage("kprobe.events.offcpu", 0, 1, b"node-1", value, ())


def _agent_batches(tmp_path: Path, key: bytes | None) -> list[bytes]:
    """What the real agent sink produces (spooled: no broker at 127.0.0.1:1), as it would send it."""
    sink = KafkaSink(KafkaSinkConfig("127.0.0.1:1", tmp_path / "spool", message_timeout_ms=1000, batch_key=key),
                     host="node-1", topics_ready=False)
    try:
        sink.write("offcpu", _cols(50))
        sink.write("offcpu", _cols(30))
        return [bytes(i.payload) for i in sink.spool.peek(10)]
    finally:
        sink.close(timeout=2)


def test_agent_batches_verify_with_the_key_and_ingest_decodes_them(tmp_path: Path) -> None:
    batches = _agent_batches(tmp_path, KEY)
    assert len(batches) == 2
    for b in batches:
        d = decode(_raw(b), key=KEY)
        assert d.error == "" and d.header is not None and d.header.mac
    assert decode(_raw(batches[0])).error == ""  # readers without the key still decode


def test_forged_and_preclaimed_batches_are_refused(tmp_path: Path) -> None:
    real = _agent_batches(tmp_path, KEY)[0]
    h, _ = wire.decode_header(real)
    # an attacker who saw (or guessed) the id: same header, its own rows, no key
    forged = wire.encode(wire.BatchHeader(h.table, h.host, h.batch_id, h.seq, 3, 0, 0, time.time_ns()), _cols(3))
    d = decode(_raw(bytes(forged)), key=KEY)
    assert d.header is None and "unauthenticated" in d.error  # to the DLQ, counted: it never claims the id
    # ... or a stolen MAC on other rows
    stolen = wire.encode(wire.BatchHeader(h.table, h.host, h.batch_id, h.seq, 3, 0, 0, h.produced_ns, mac=h.mac),
                         _cols(3))
    assert "unauthenticated" in decode(_raw(bytes(stolen)), key=KEY).error
    # ... or the real batch with one byte of the body changed
    tampered = bytearray(real)
    tampered[-40] ^= 1
    assert "unauthenticated" in decode(_raw(bytes(tampered)), key=KEY).error
    assert "unauthenticated" in decode(_raw(real), key=b"another-deployment-key!").error


def test_batch_ids_are_unpredictable_without_the_key() -> None:
    keyed = wire.batch_id("node-1", "run", 7, KEY)
    assert keyed != wire.batch_id("node-1", "run", 7) and keyed != wire.batch_id("node-1", "run", 7, b"x" * 16)
    assert keyed == wire.batch_id("node-1", "run", 7, KEY) and 0 <= keyed < 2**63


def test_batch_key_file_must_be_private_and_long_enough(tmp_path: Path) -> None:
    p = tmp_path / "key"
    p.write_bytes(KEY + b"\n")
    os.chmod(p, 0o644)
    with pytest.raises(ValueError, match="readable by other users"):
        wire.load_batch_key(p)
    os.chmod(p, 0o600)
    assert wire.load_batch_key(p) == KEY
    p.write_bytes(b"short")
    with pytest.raises(ValueError, match="at least 16"):
        wire.load_batch_key(p)
