"""Unsigned LEB128 varints: protobuf's length/tag encoding and ClickHouse Native's string lengths alike.

Why in schemas/: it is a piece of the byte formats kprobe writes, and its three users sit in
unrelated packages (sinks/native.py: ClickHouse Native blocks; export/protowire.py: the
Perfetto trace; otel/http_server.py: the gRPC status message). It is not the Kafka wire format
of topics/ (that is Arrow IPC, topics/wire.py). schemas/ is the package every writer may
depend on and that depends on nothing of kprobe's, so no user pulls in another's stack.
"""


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
