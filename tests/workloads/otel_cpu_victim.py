"""An OTel-instrumented victim of CPU preemption: one span around a known amount of its own CPU work.

argv: OTLP gRPC endpoint, CPU work in ms[, CPU]. With CPU, only the span's thread is pinned to it, after the
exporter has started its gRPC threads: pinning the whole process put those threads on the hog's CPU too, and the
span then also waited for its own process (once 100 of 450 ms). Prints one JSON line: span_id, trace_id, pid, tid, start_ns,
end_ns (the span's own timestamps) and cpu_ns. Ground truth: inside the span the thread waited
(end - start) - cpu_ns while runnable (pin it and a hog to one CPU). The span is exported after it ends.
"""
import json
import os
import sys
import threading
import time

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

endpoint, work_ms = sys.argv[1], float(sys.argv[2])
pin = int(sys.argv[3]) if len(sys.argv) > 3 else None
provider = TracerProvider(resource=Resource.create({"service.name": "risk-engine", "process.pid": os.getpid()}))
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=30)))
tracer = provider.get_tracer("kprobe.tests")
sys.stdin.readline()
if pin is not None:
    os.sched_setaffinity(0, {pin})      # this thread only (Linux: 0 is the calling thread)
work_ns = int(work_ms * 1e6)
x = 0
with tracer.start_as_current_span("score order") as span:
    span.set_attribute("thread.id", threading.get_native_id())
    c0 = time.thread_time_ns()
    while time.thread_time_ns() - c0 < work_ns:
        for _ in range(2000):
            x += 1
    cpu = time.thread_time_ns() - c0
    ctx = span.get_span_context()
print(json.dumps({"span_id": f"{ctx.span_id:016x}", "trace_id": f"{ctx.trace_id:032x}", "pid": os.getpid(),
                  "tid": threading.get_native_id(), "start_ns": span.start_time, "end_ns": span.end_time,
                  "cpu_ns": cpu}), flush=True)
provider.shutdown()
