"""The Kafka spool survives what a disk does to it: bad files, a full disk, a restart.

Real files on a real file system; the full disk is a real 64 KiB tmpfs (root only).
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest

from kprobe.sinks.kafka import KafkaSink, KafkaSinkConfig
from kprobe.sinks.spool import QUARANTINE, DiskSpool, encode
from tests.conftest import is_root


def _bad_files(d: Path) -> None:
    good = encode("kprobe.events.offcpu", b"h", 4, b"payload-bytes" * 10)
    (d / "0000-000000000001.kpb").write_bytes(b"")  # a crash before the first byte
    (d / "0000-000000000002.kpb").write_bytes(good[:-7])  # truncated payload
    (d / "0000-000000000003.kpb").write_bytes(encode("kprobe.x", b"h", 1, b"p").replace(b"kprobe.x", b"kp\xff\xfeobe"))
    (d / "0000-000000000004.kpb").write_bytes(b"\x00\x01")  # a legacy header cut short
    (d / "0000-000000000005.kpb").write_bytes(good)


def test_corrupt_files_at_start_are_quarantined_counted_and_the_good_one_kept(tmp_path: Path) -> None:
    _bad_files(tmp_path)
    sp = DiskSpool(tmp_path)
    assert (sp.messages, sp.rows, sp.quarantined) == (1, 4, 4)
    assert sorted(p.name for p in (tmp_path / QUARANTINE).iterdir()) == [f"0000-00000000000{i}.kpb" for i in range(1, 5)]
    [item] = sp.peek(10)
    assert item.topic == "kprobe.events.offcpu" and item.rows == 4 and item.payload == b"payload-bytes" * 10


def test_agent_sink_starts_on_a_corrupt_spool_and_reports_it(tmp_path: Path) -> None:
    """The KafkaSink (what `kprobe record --kafka` builds) comes up and says what it quarantined."""
    _bad_files(tmp_path)
    sink = KafkaSink(KafkaSinkConfig("127.0.0.1:1", tmp_path, message_timeout_ms=1000), topics_ready=False)
    try:
        snap = sink.snapshot()
        assert snap["spool_quarantined_files"] == 4 and snap["spool_messages"] == 1 and snap["spool_rows"] == 4
    finally:
        sink.close(timeout=2)


def test_a_file_that_goes_bad_later_is_quarantined_by_the_drain_not_raised(tmp_path: Path) -> None:
    sp = DiskSpool(tmp_path)
    assert sp.put("0001-000000000001", "kprobe.events.offcpu", b"h", 2, b"a" * 50) is None
    assert sp.put("0001-000000000002", "kprobe.events.offcpu", b"h", 3, b"b" * 50) is None
    p = tmp_path / "0001-000000000001.kpb"
    blob = bytearray(p.read_bytes())
    blob[25] ^= 0xFF  # a flipped bit in the topic name: bad UTF-8 and a bad checksum
    p.write_bytes(bytes(blob))
    items = sp.peek(10)
    assert [i.payload[:1] for i in items] == [b"b"]
    assert sp.quarantined == 1 and sp.messages == 1 and (tmp_path / QUARANTINE / p.name).exists()


def test_put_is_fsynced_owner_only_and_leaves_no_temporary(tmp_path: Path) -> None:
    sp = DiskSpool(tmp_path / "spool")
    assert sp.put("0001-000000000001", "t", b"k", 1, b"x") is None
    assert os.stat(tmp_path / "spool").st_mode & 0o777 == 0o700
    assert os.stat(tmp_path / "spool" / "0001-000000000001.kpb").st_mode & 0o777 == 0o600
    assert not list((tmp_path / "spool").glob("*.tmp"))


def test_put_syncs_file_and_directory_before_it_returns(tmp_path: Path) -> None:
    """fsync before rename, then the directory: checked on the real syscalls with strace."""
    if subprocess.run(["which", "strace"], capture_output=True).returncode != 0:
        pytest.skip("strace is not installed: the syscall order cannot be observed")
    import sys

    code = ("import sys; from kprobe.sinks.spool import DiskSpool; sp = DiskSpool(__import__('pathlib').Path(sys.argv[1]));"
            "print('MARK', flush=True); sp.put('0001-000000000001', 't', b'k', 1, b'x')")
    r = subprocess.run(["strace", "-f", "-e", "trace=fsync,rename,renameat,renameat2,write", sys.executable, "-c", code,
                        str(tmp_path)], capture_output=True, text=True, timeout=60)
    after = r.stderr[r.stderr.index("MARK"):]
    calls = [ln.split("(")[0].split()[-1] for ln in after.splitlines() if "(" in ln and "MARK" not in ln]
    calls = [c for c in calls if c in ("fsync", "rename", "renameat", "renameat2")]
    assert calls[:3] in (["fsync", "rename", "fsync"], ["fsync", "renameat", "fsync"], ["fsync", "renameat2", "fsync"]), calls


def test_enospc_is_a_counted_drop_and_the_spool_keeps_working(tmp_path: Path) -> None:
    if not is_root():
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    try:
        sink = KafkaSink(KafkaSinkConfig("127.0.0.1:1", mnt / "spool", message_timeout_ms=1000), topics_ready=False)
        try:
            refused = [sink.spool.put(f"0001-{i:012d}", "kprobe.events.offcpu", b"h", 10, os.urandom(8000))
                       for i in range(20)]
            assert refused.count(None) >= 3 and "spool_io_error" in refused  # the disk filled, no exception
            assert sink.spool.io_errors == refused.count("spool_io_error")
            sink._to_spool("0001-999999999999", "kprobe.events.offcpu", 10, os.urandom(8000))
            snap = sink.snapshot()
            assert snap["dropped"].get("spool_io_error") == 10 and snap["spool_io_errors"] == sink.spool.io_errors
            assert not list((mnt / "spool").glob("*.tmp"))  # the half-written file was removed
            kept = sink.spool.messages
        finally:
            sink.close(timeout=2)
        assert DiskSpool(mnt / "spool").messages == kept  # restart: everything that was written is there
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_concurrent_puts_and_drain_peeks_never_raise(tmp_path: Path) -> None:
    sp = DiskSpool(tmp_path)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for i in range(200):
                sp.put(f"0001-{i:012d}", "t", b"k", 1, b"x" * 100)
        except BaseException as e:  # noqa: BLE001 - the assertion below reports it
            errors.append(e)

    t = threading.Thread(target=writer)
    t.start()
    seen = 0
    while t.is_alive() or not sp.empty():
        for item in sp.peek(16):
            sp.remove(item)
            seen += 1
    t.join()
    assert not errors and seen == 200 and sp.quarantined == 0
