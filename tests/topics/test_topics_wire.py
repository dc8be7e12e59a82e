"""Wire format, topic names, disk spool and Prometheus text: the pieces the pipeline is built from."""

from __future__ import annotations

import numpy as np
import pytest

from kprobe.api.prometheus import Metric, parse, render
from kprobe.schemas.tables import BY_NAME, EVENT_TYPES
from kprobe.sinks.spool import DiskSpool
from kprobe.topics import names, wire


def _syscall_columns(n: int) -> dict[str, np.ndarray]:
    et = BY_NAME["syscall"]
    r = np.zeros(n, dtype=et.record)
    r["enter_ns"] = np.arange(n) + 1000
    r["exit_ns"] = r["enter_ns"] + 7
    r["tgid"] = 42
    cols = et.columns(r, 1_764_000_000 * 10**9)
    cols["host"] = np.full(n, "node-1", dtype=object)
    cols["service"] = np.array([f"svc{i % 3}" for i in range(n)], dtype=object)
    return cols


def test_batch_roundtrip_keeps_every_column_type_and_value():
    cols = _syscall_columns(1000)
    lo, hi = wire.ts_range(cols)
    h = wire.BatchHeader("syscall", "node-1", wire.batch_id("node-1", "run", 7), 7, 1000, lo, hi, 123)
    header, rb = wire.decode(wire.encode(h, cols))
    assert header == h
    back = wire.columns_of(rb)
    assert list(back) == list(cols)
    for k, v in cols.items():
        assert back[k].dtype == v.dtype, k
        assert (back[k] == v).all(), k


@pytest.mark.parametrize("data, reason", [
    (b"", "shorter"), (b"XXXX\x01\x00\x00\x00\x00\x00", "magic"), (b"KPRB\x09\x00\x00\x00\x00\x00", "version"),
    (b"KPRB\x01\x00\xff\x00\x00\x00abc", "header length"), (b"KPRB\x01\x00\x03\x00\x00\x00abc", "header"),
])
def test_malformed_messages_raise_wire_error_with_reason(data, reason):
    with pytest.raises(wire.WireError, match=reason):
        wire.decode(data)


def test_row_count_mismatch_is_refused():
    cols = _syscall_columns(10)
    h = wire.BatchHeader("syscall", "h", 1, 1, 11, 0, 0, 0)
    with pytest.raises(wire.WireError, match="11 rows"):
        wire.decode(wire.encode(h, cols))


def test_batch_ids_differ_per_host_run_and_seq():
    ids = {wire.batch_id(h, r, s) for h in ("a", "b") for r in ("r1", "r2") for s in range(100)}
    assert len(ids) == 400 and all(0 <= i < 2**63 for i in ids)


def test_one_topic_per_event_type_plus_agent_tables_and_spans():
    topics = names.data_topics()
    assert len(topics) == len(EVENT_TYPES) + 6
    assert {"kprobe.events.processes", "kprobe.events.memcg_members", "kprobe.events.cgroup_cpu",
            "kprobe.events.cpu_irq", "kprobe.events.hosts", "kprobe.spans"} <= set(topics)
    for et in EVENT_TYPES:
        assert names.event_topic(et.name) == f"kprobe.events.{et.name}"
        assert names.table_of(names.event_topic(et.name, "staging")) == et.name
    assert names.table_of(names.DLQ_TOPIC) is None
    assert names.REPLAY_CONTROL_TOPIC == "kprobe.control.replay"
    assert names.REPLAY_RESULTS_TOPIC == "kprobe.replay.results"
    specs = {s.name: s for s in names.all_topics(retention_hours=24, retention_gb=5)}
    assert specs["kprobe.events.offcpu"].config["retention.ms"] == str(24 * 3600 * 1000)
    assert specs["kprobe.events.offcpu"].config["retention.bytes"] == str(5 << 30)
    assert {names.DLQ_TOPIC, names.REPLAY_CONTROL_TOPIC, names.REPLAY_RESULTS_TOPIC} <= set(specs)


def test_spool_keeps_order_bound_and_survives_reopen(tmp_path):
    sp = DiskSpool(tmp_path, max_bytes=1000)
    assert sp.put("0001-000000000002", "t", b"k", 5, b"b" * 100) is None
    assert sp.put("0001-000000000001", "t", b"k", 3, b"a" * 100) is None
    assert sp.put("0001-000000000003", "t", b"k", 9, b"c" * 2000) == "spool_full"  # over the bound: refused
    again = DiskSpool(tmp_path, max_bytes=1000)
    assert (again.messages, again.rows) == (2, 8)
    items = again.peek(10)
    assert [i.payload[:1] for i in items] == [b"a", b"b"] and items[0].topic == "t" and items[0].key == b"k"
    again.remove(items[0])
    assert (again.messages, again.rows) == (1, 5) and not again.empty()


def test_prometheus_text_renders_and_parses():
    text = render([Metric("kp_x_total", "x", "counter", (({"t": 'a"b'}, 3), ({}, 1.5)))])
    assert "# TYPE kp_x_total counter" in text
    got = parse(text)
    assert got['kp_x_total{t="a\\"b"}'] == 3 and got["kp_x_total"] == 1.5


def _strings_back(values: np.ndarray) -> list:
    h = wire.BatchHeader("t", "h", 1, 1, len(values), 0, 0, 0)
    _, rb = wire.decode(wire.encode(h, {"s": values, "i": np.arange(len(values))}))
    return list(wire.columns_of(rb)["s"]), rb.schema.field("s").type


def test_repeated_strings_travel_as_a_dictionary_of_distinct_values():
    from kprobe.agent.recorder import constant_column

    names = np.array(["read", "write", "é€"], dtype=object)
    few = names[np.arange(300) % 3]
    back, t = _strings_back(few)
    assert back == list(few) and str(t).startswith("dictionary")
    back, t = _strings_back(constant_column(50, "node-1"))
    assert back == ["node-1"] * 50 and str(t).startswith("dictionary")
    # equal strings held by distinct objects (np.full makes one per row): still one dictionary value
    distinct_objects = np.full(40, "svc", dtype=object)
    arr = wire.string_array(distinct_objects)
    assert arr.dictionary.to_pylist() == ["svc"] and arr.to_pylist() == ["svc"] * 40
    with_null = np.array(["a", None, "a", "b", None, "a"], dtype=object)
    arr = wire.string_array(with_null)
    assert arr.to_pylist() == ["a", None, "a", "b", None, "a"] and sorted(arr.dictionary.to_pylist()) == ["a", "b"]
    assert _strings_back(with_null)[0] == list(with_null)


def test_mostly_distinct_strings_stay_a_plain_string_column():
    paths = np.array([f"/tmp/f{i}" for i in range(100)], dtype=object)
    back, t = _strings_back(paths)
    assert back == list(paths) and str(t) == "string"
    assert wire.string_array(np.empty(0, dtype=object)).to_pylist() == []
