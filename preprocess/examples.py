"""Read a tf.train.Example's features without TensorFlow (for scanning existing shards).

The Example message is a map of key -> bytes list | float list | int64 list; this decodes the
protobuf wire format just far enough to get those values.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

Value = list[bytes] | list[int] | list[float]


def parse_example(data: bytes) -> dict[str, Value]:
    """{feature key: values}; raises ValueError on bytes that are not an Example."""
    features: dict[str, Value] = {}
    for number, payload in _fields(data):
        if number != 1 or not isinstance(payload, bytes):
            continue
        for entry_number, entry in _fields(payload):  # Features.feature map entries
            if entry_number == 1 and isinstance(entry, bytes):
                key, value = _map_entry(entry)
                features[key] = value
    return features


def _map_entry(entry: bytes) -> tuple[str, Value]:
    key, value = "", []
    for number, payload in _fields(entry):
        if number == 1 and isinstance(payload, bytes):
            key = payload.decode("utf-8")
        elif number == 2 and isinstance(payload, bytes):
            value = _feature(payload)
    return key, value


def _feature(data: bytes) -> Value:
    for kind, payload in _fields(data):
        if not isinstance(payload, bytes):
            continue
        if kind == 1:  # BytesList
            return [v for n, v in _fields(payload) if n == 1 and isinstance(v, bytes)]
        if kind == 2:  # FloatList, packed or not
            return _floats(payload)
        if kind == 3:  # Int64List, packed or not
            return _ints(payload)
    return []


def _ints(data: bytes) -> list[int]:
    out: list[int] = []
    for number, value in _fields(data):
        if number != 1:
            continue
        if isinstance(value, int):
            out.append(_signed(value))
        else:  # packed
            pos = 0
            while pos < len(value):
                raw, pos = _varint(value, pos)
                out.append(_signed(raw))
    return out


def _floats(data: bytes) -> list[float]:
    out: list[float] = []
    for number, value in _fields(data):
        if number == 1 and isinstance(value, bytes):
            out.extend(struct.unpack(f"<{len(value) // 4}f", value))
    return out


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _fields(data: bytes) -> Iterator[tuple[int, bytes | int]]:
    """(field number, value): an int for varints, bytes for everything else."""
    pos = 0
    while pos < len(data):
        tag, pos = _varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, value
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise ValueError("truncated protobuf field")
            yield number, data[pos : pos + length]
            pos += length
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            yield number, data[pos : pos + width]
            pos += width
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
