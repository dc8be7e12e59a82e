"""Card data in a real replayable recording (eBPF replay probe, real process, real socket): a
card number that arrives split across two recv() calls, and a CVV, are not in the log; the
replay of the recording is still identical (issue 18)."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest
from card_shapes import leaked

from kprobe.schemas.syscall_table import nr
from tests.conftest import is_root

NR_RECVFROM = nr("recvfrom")
NR_RECVMSG = nr("recvmsg")
WORKLOADS = Path(__file__).resolve().parents[1] / "workloads" / "replay"
PAN = "4111111111111111"

pytestmark = pytest.mark.kernel


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory, probes_built: None):
    if not is_root():
        pytest.skip("attaching eBPF probes and ptrace need root (CI runs as root)")
    from kprobe.replay import log as rlog
    from kprobe.replay.record import ReplayRecorder

    session = tmp_path_factory.mktemp("cards") / "session"
    port = _free_port()
    argv = [sys.executable, "-I", str(WORKLOADS / "card_echo.py"), str(port)]
    rec = ReplayRecorder(session)
    try:
        p = rec.start(argv, stdout_pipe=True)
        assert p.stdout is not None and p.stdout.readline() == b"ready\n"
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"amount=12.50&card=4111 1111")  # the card number is cut here...
            time.sleep(0.3)
            s.sendall(b" 1111 1111&cvv=737\n")  # ... and completed by a second recv()
            assert s.recv(10) == b"ok\n"
        receipt = p.stdout.readline()
        assert p.wait() == 0
    finally:
        rec.stop()
    assert receipt == b"receipt card=4111 1111 1111 1111 cvv=737 amount=12.50\n"  # the real run saw it whole
    return {"session": session, "log": rlog.load(session, p.pid), "argv": argv}


def test_the_log_holds_neither_the_split_card_number_nor_the_cvv(recording) -> None:
    log = recording["log"]
    recvs = [e.regions.get(0, b"") for e in log.events if e.nr in (NR_RECVFROM, NR_RECVMSG) and e.ret > 2]
    assert recvs == [b"amount=12.50&card=4111 11**", b" **** 1111&cvv=***\n"]  # two reads, masked as one stream
    raw = (recording["session"] / "rdata.bin").read_bytes()
    assert not leaked(raw.replace(b"\0", b"|"), PAN)
    assert b"cvv=737" not in raw and b"cvv=***" in raw
    assert b"receipt card=4111 11** **** 1111 cvv=*** amount=12.50" in raw
    assert log.meta["card_numbers_masked"] >= 3


def test_the_masked_recording_replays_identically(recording) -> None:
    from kprobe.replay.engine import ReplayEngine

    log = recording["log"]
    assert log.replayable_until == len(log.events), log.problem
    result = ReplayEngine(log, recording["argv"]).run()
    assert result.outcome == "identical", (result.divergences, result.notes)
    assert result.exit_code == 0
