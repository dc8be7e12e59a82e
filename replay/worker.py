"""Replay worker: consume replay requests from the control topic, publish results.

    python -m kprobe.replay.worker --bootstrap 127.0.0.1:9092 [--group kprobe-replay] [--max N]

    python -m kprobe.replay.worker --bootstrap HOST:9093 --config /etc/kprobe/replay-worker.toml

Requests and results are msgspec JSON values (keys: the request id). A request names a recording
the worker can read (``data`` directory shared with the recorder, or copied to the worker host)
and the command to replay. The worker's configuration decides what a request may name (allowed
binaries, data roots: replay/worker_config.py) and each replay runs in a child process as an
unprivileged user, in a private directory with a clean environment, without network
(replay/worker_sandbox.py). Bad requests (undecodable JSON, a binary or path not allowed, a missing
or corrupt log, absurd values, a crashing replay) get a result with ``ok: false`` and the reason,
never a crash and never silence. The request's
offset is committed only after its result was delivered, so a worker that dies mid-replay leaves
the request to the next one (at-least-once; results carry the request id for de-duplication).

Topic names are constants here (the general Kafka pipeline under topics/ owns event topics).
"""

from __future__ import annotations

import argparse
import logging
import threading
from pathlib import Path

import msgspec

from kprobe.replay.worker_config import ConfigError, RequestRefused, WorkerConfig, check_request, load_config

log = logging.getLogger("kprobe.replay.worker")

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


def handle(raw: bytes, key: bytes | None, config: WorkerConfig) -> ReplayResultMsg:
    """One request -> one result; every failure (a refused request, a bad recording, a crash of the
    replay) becomes an ``ok: false`` result, so no message can make the worker loop."""
    from kprobe.replay import log as rlog
    from kprobe.replay.worker_sandbox import Job, run_job

    rid = (key or b"").decode(errors="replace")[:128]
    try:
        req = msgspec.json.decode(raw, type=ReplayRequest)
    except msgspec.DecodeError as e:
        return ReplayResultMsg(rid or "?", False, f"bad request: {e}")
    try:
        checked = check_request(req, config)
        uid, gid = config.identity()
        job = Job(checked.request_id, str(checked.session), checked.pid, checked.argv, checked.inject,
                  strict=not (checked.inject or checked.what_if), cpu=checked.cpu, deadline_ms=checked.deadline_ms,
                  uid=uid, gid=gid, isolate=config.isolate, workdir="")
        return run_job(job, config.timeout_s, Path(config.work_root))
    except (RequestRefused, rlog.LogError, ConfigError) as e:
        return ReplayResultMsg(req.request_id[:128], False, f"refused: {e}")
    except Exception as e:  # noqa: BLE001 - a bug must answer the request, not crash-loop the worker
        log.exception("replay request %s failed", req.request_id[:128])
        return ReplayResultMsg(req.request_id[:128], False, f"internal error: {type(e).__name__}: {e}")


def kafka_settings(bootstrap: str, config: WorkerConfig) -> dict[str, str]:
    """Connection settings shared by the consumer and the producer: TLS/SASL from the config, as is."""
    return {"bootstrap.servers": bootstrap, **config.kafka}


def run(bootstrap: str, group: str = "kprobe-replay", max_requests: int | None = None,
        stop: threading.Event | None = None, poll_s: float = 0.5,
        control_topic: str = CONTROL_TOPIC, results_topic: str = RESULTS_TOPIC,
        config: WorkerConfig | None = None) -> int:
    """Serve until ``stop`` is set or ``max_requests`` were answered; returns requests answered.

    The topic names default to the constants; tests pass fresh names to isolate runs."""
    import confluent_kafka

    config = config or WorkerConfig().check()
    conn = kafka_settings(bootstrap, config)
    consumer = confluent_kafka.Consumer({
        **conn, "group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False,
    })
    producer = confluent_kafka.Producer({**conn, "acks": "all"})
    answered = 0
    stop = stop or threading.Event()
    try:
        consumer.subscribe([control_topic])
        while not stop.is_set() and (max_requests is None or answered < max_requests):
            msg = consumer.poll(poll_s)
            if msg is None:
                continue
            if msg.error():
                continue  # e.g. the topic does not exist yet; librdkafka retries
            result = handle(msg.value() or b"", msg.key(), config)
            producer.produce(results_topic, key=result.request_id.encode(), value=msgspec.json.encode(result))
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
    ap.add_argument("--config", type=Path, default=None,
                    help="TOML or JSON: allowed binaries and data roots, the user replays run as, Kafka TLS/SASL "
                         "(see kprobe.replay.worker_config); without it every request is refused")
    args = ap.parse_args(argv)
    try:
        config = load_config(args.config)
    except (ConfigError, OSError) as e:
        ap.error(str(e))
    run(args.bootstrap, args.group, args.max, config=config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
