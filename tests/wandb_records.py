"""Reads the records of an offline W&B run file (``run-<id>.wandb``) back, for the tests.

The file is a LevelDB-style log: a 7-byte header (``:W&B``, magic, version), then 32 KiB blocks of
chunks, each with a 7-byte header (CRC, length, type: full / first / middle / last) and a piece of
a serialised ``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

_BLOCK = 32768
_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def read_records(path: Path) -> list[wandb_internal_pb2.Record]:
    data = path.read_bytes()
    ident, _magic, _version = struct.unpack("<4sHB", data[:_HEADER])
    assert ident == b":W&B", f"{path} is not a W&B run file"
    records, pending, offset = [], b"", _HEADER
    while offset + _HEADER <= len(data):
        room = _BLOCK - offset % _BLOCK
        if room < _HEADER:  # the rest of a block too small for a header is padding
            offset += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[offset : offset + _HEADER])
        chunk = data[offset + _HEADER : offset + _HEADER + length]
        offset += _HEADER + length
        if kind == 0 and length == 0:
            offset += room - _HEADER  # zero padding to the end of the block
            continue
        pending = chunk if kind in (_FULL, _FIRST) else pending + chunk
        if kind in (_FULL, _LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def history_rows(path: Path) -> list[dict]:
    return [
        {_key(i): json.loads(i.value_json) for i in r.history.item} for r in read_records(path) if r.HasField("history")
    ]


def summary(path: Path) -> dict:
    values: dict = {}
    for record in read_records(path):
        if record.HasField("summary"):
            values.update({_key(i): json.loads(i.value_json) for i in record.summary.update})
    return values
