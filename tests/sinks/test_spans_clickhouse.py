"""The `spans` table on the real old ClickHouse (Debian's 18.16): real SDK spans, decoded and masked by
kprobe, stored through the same columns the embedded writer uses, and found again by span id."""

from __future__ import annotations

import json
import os
import uuid

import pytest
from clickhouse_driver import Client
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from kprobe.otel.otlp_decode import decode_export_request
from kprobe.otel.span_writer import batch_columns
from kprobe.schemas.store_tables import SPANS_TABLE
from kprobe.sinks.ddl import ServerFeatures, create_table_sql, session_settings

pytestmark = pytest.mark.servers


def test_spans_table_on_clickhouse_18(stack: dict[str, str]) -> None:
    host, port = stack["CLICKHOUSE_HOST"], int(stack["CLICKHOUSE_PORT"])
    version = Client(host, port=port).execute("SELECT version()")[0][0]
    features = ServerFeatures.from_version(version)
    db = f"kprobe_spans_{uuid.uuid4().hex[:10]}"
    cl = Client(host, port=port, settings={**session_settings(features), "use_numpy": True})
    cl.execute(f"CREATE DATABASE {db}")
    try:
        cl.execute(create_table_sql(SPANS_TABLE, features, database=db))
        memory = InMemorySpanExporter()
        provider = TracerProvider(resource=Resource.create({"service.name": "payment-handler", "process.pid": os.getpid()}))
        provider.add_span_processor(SimpleSpanProcessor(memory))
        with provider.get_tracer("t").start_as_current_span("POST /pay") as span:
            span.set_attribute("card.number", "4111111111111111")
            span.set_status(Status(StatusCode.ERROR, "settlement timeout"))
            sid = f"{span.get_span_context().span_id:016x}"
        provider.shutdown()
        batch = decode_export_request(encode_spans(memory.get_finished_spans()).SerializeToString())
        cols = batch_columns(batch)
        names = ", ".join(f"`{c}`" for c in cols)
        cl.execute(f"INSERT INTO `{db}`.spans ({names}) VALUES", list(cols.values()), columnar=True)
        rows = cl.execute(f"SELECT name, pid, status_code, attributes FROM `{db}`.spans WHERE span_id = '{sid}'",
                          settings={"use_numpy": False})
        assert len(rows) == 1
        name, pid, status, attrs = rows[0]
        assert (name, pid, status) == ("POST /pay", os.getpid(), 2)
        assert json.loads(attrs)["card.number"] == "411111******1111"
    finally:
        cl.execute(f"DROP DATABASE IF EXISTS {db}")
        cl.disconnect()
