"""Unsigned LEB128 varints: protobuf's length/tag encoding and ClickHouse Native's string lengths alike."""


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
