"""Frames between the platform and an app process: a length-prefixed JSON header, then
Arrow IPC streams (no pickling of data)."""

from __future__ import annotations

import json
import struct
from typing import Any, BinaryIO

import pyarrow as pa

__all__ = ["read_header", "read_table", "write_header", "write_table"]

_LEN = struct.Struct("<I")


def read_header(f: BinaryIO) -> dict[str, Any] | None:
    raw = f.read(_LEN.size)
    if len(raw) < _LEN.size:
        return None
    (n,) = _LEN.unpack(raw)
    return json.loads(f.read(n))


def write_header(f: BinaryIO, header: dict[str, Any]) -> None:
    data = json.dumps(header).encode()
    f.write(_LEN.pack(len(data)) + data)


def write_table(f: BinaryIO, table: pa.Table) -> None:
    with pa.ipc.new_stream(f, table.schema) as w:
        w.write_table(table)


def read_table(f: BinaryIO) -> pa.Table:
    return pa.ipc.open_stream(f).read_all()
