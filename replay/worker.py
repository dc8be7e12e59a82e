"""Replay worker: consume replay requests from the control topic, publish results.

    python -m kprobe.replay.worker --bootstrap 127.0.0.1:9092 [--group kprobe-replay] [--max N]

Requests and results are msgspec JSON values (keys: the request id). A request names a recording
the worker can read (``data`` directory shared with the recorder, or copied to the worker host)
and the command to replay; bad requests (undecodable JSON, missing log, unparsable injection)
get a result with ``ok: false`` and the reason, never a crash and never silence. The request's
offset is committed only after its result was delivered, so a worker that dies mid-replay leaves
the request to the next one (at-least-once; results carry the request id for de-duplication).

Topic names are constants here (the general Kafka pipeline under topics/ owns event topics).
"""

from __future__ import annotations

import argparse
import shutil
import threading
from dataclasses import asdict
from pathlib import Path

import msgspec

CONTROL_TOPIC = "kprobe.control.replay"
RESULTS_TOPIC = "kprobe.replay.results"


class ReplayRequest(msgspec.Struct, forbid_unknown_fields=False):
    request_id: str
    data: str
    command: list[str]
    pid: int | None = None
    incident: str | None = None       # SESSION[:PID] under <data>/replay
    inject: list[str] = []
    deadline_ms: float | None = None
    what_if: bool = False
    cpu: int = 0


class ReplayResultMsg(msgspec.Struct):
    request_id: str
    ok: bool
    error: str = ""
    outcome: str = ""
    events_total: int = 0
    events_replayed: int = 0
    outputs_identical: bool = False
    divergences: list[dict] = []
    requests: list[dict] = []
    verdict: str = ""
    notes: list[str] = []
    exit_code: int | None = None
    wall_s: float = 0.0
    recorded_span_ms: float = 0.0
    replay_span_ms: float = 0.0


def handle(raw: bytes, key: bytes | None = None) -> ReplayResultMsg:
    """One request -> one result; every failure becomes an ``ok: false`` result."""
    from kprobe.replay import log as rlog
    from kprobe.replay.engine import ReplayEngine
    from kprobe.replay.inject import InjectError, parse

    rid = (key or b"").decode(errors="replace")
    try:
        req = msgspec.json.decode(raw, type=ReplayRequest)
    except msgspec.DecodeError as e:
        return ReplayResultMsg(rid or "?", False, f"bad request: {e}")
    try:
        if not req.command:
            raise ValueError("request has no command")
        data = Path(req.data)
        if req.incident:
            name, _, pid = req.incident.partition(":")
            log = rlog.load(data / "replay" / name, int(pid) if pid else None)
        elif req.pid is not None:
            log = rlog.load(rlog.find_session(data, req.pid), req.pid)
        else:
            raise ValueError("request needs pid or incident")
        injections = [parse(s) for s in req.inject]
        exe = shutil.which(req.command[0]) or req.command[0]
        res = ReplayEngine(log, [exe, *req.command[1:]], injections, strict=not (injections or req.what_if),
                           cpu=req.cpu, deadline_ms=req.deadline_ms).run()
    except (InjectError, rlog.LogError, OSError, ValueError) as e:
        return ReplayResultMsg(req.request_id, False, str(e))
    return ReplayResultMsg(
        req.request_id, True, "", res.outcome, res.events_total, res.events_replayed, res.outputs_identical,
        [asdict(d) for d in res.divergences], [asdict(q) for q in res.requests], res.verdict, res.notes,
        res.exit_code, res.wall_s, res.recorded_span_ms, res.replay_span_ms,
    )


def run(bootstrap: str, group: str = "kprobe-replay", max_requests: int | None = None,
        stop: threading.Event | None = None, poll_s: float = 0.5) -> int:
    """Serve until ``stop`` is set or ``max_requests`` were answered; returns requests answered."""
    import confluent_kafka

    consumer = confluent_kafka.Consumer({
        "bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    answered = 0
    stop = stop or threading.Event()
    try:
        consumer.subscribe([CONTROL_TOPIC])
        while not stop.is_set() and (max_requests is None or answered < max_requests):
            msg = consumer.poll(poll_s)
            if msg is None:
                continue
            if msg.error():
                continue  # e.g. the topic does not exist yet; librdkafka retries
            result = handle(msg.value() or b"", msg.key())
            producer.produce(RESULTS_TOPIC, key=result.request_id.encode(), value=msgspec.json.encode(result))
            if producer.flush(30) != 0:
                raise RuntimeError("replay result not delivered in 30 s: request left uncommitted")
            consumer.commit(message=msg, asynchronous=False)
            answered += 1
    finally:
        consumer.close()
    return answered


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers, e.g. 127.0.0.1:9092")
    ap.add_argument("--group", default="kprobe-replay", help="consumer group (default: %(default)s)")
    ap.add_argument("--max", type=int, default=None, help="exit after this many requests")
    args = ap.parse_args(argv)
    run(args.bootstrap, args.group, args.max)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
