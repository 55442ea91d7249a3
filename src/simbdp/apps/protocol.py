"""Frames between the platform and an app process, over a pair of pipes.

A frame is a 4-byte little-endian length, a JSON header, then one Arrow IPC stream per entry
of ``header["sizes"]`` (its length in bytes). Known sizes let the reader take each stream into
one aligned buffer and open it without copying, and bound every read by a deadline and a byte
cap. Tables are written straight from their buffers: no pickling, no staging copy.

Used on both sides: the platform passes a ``deadline`` (``time.monotonic()``) and a
:class:`Peer` on non-blocking fds; the child passes neither, on blocking fds. Raises
``TimeoutError`` when the deadline passes, ``EOFError`` when the peer is gone and
``ValueError`` when the bytes break the protocol.
"""

from __future__ import annotations

import json
import os
import select
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

__all__ = ["MAX_HEADER_BYTES", "Peer", "ipc_size", "recv", "send"]

_LEN = struct.Struct("<I")
MAX_HEADER_BYTES = 1024**2
_TICK_SECS = 0.02


@dataclass(frozen=True)
class Peer:
    """The process at the other end, watched while the platform waits for it.

    ``pidfd`` (``os.pidfd_open``, or -1) turns the end of the process into ``EOFError`` even
    when a subprocess of it still holds the pipe; ``tick`` runs every 20 ms of waiting.
    """

    pidfd: int = -1
    tick: Callable[[], None] | None = None


def ipc_size(table: pa.Table) -> int:
    """Bytes of ``table`` as an IPC stream, counted without writing them anywhere."""
    mock = pa.MockOutputStream()
    with pa.ipc.new_stream(mock, table.schema) as w:
        w.write_table(table)
    return int(mock.size())


def _wait(fd: int, event: int, deadline: float | None, peer: Peer | None) -> None:
    if deadline is None:
        return
    peer = peer or Peer()
    poller = select.poll()
    poller.register(fd, event)
    if peer.pidfd >= 0:
        poller.register(peer.pidfd, select.POLLIN)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        ready = dict(poller.poll(max(1, int(min(left, _TICK_SECS) * 1000))))
        if fd in ready:
            return  # ready, or hung up: the next read/write tells which
        if peer.pidfd in ready:
            raise EOFError("the process ended")
        if peer.tick is not None:
            peer.tick()


def _write_all(fd: int, data: Any, deadline: float | None, peer: Peer | None) -> None:
    view = memoryview(data).cast("B")
    while view.nbytes:
        try:
            n = os.write(fd, view)
        except BlockingIOError:  # only non-blocking fds get here: wait, bounded
            _wait(fd, select.POLLOUT, deadline, peer)
            continue
        except (BrokenPipeError, ConnectionResetError) as e:
            raise EOFError("the peer closed its end") from e
        view = view[n:]


def _read_into(fd: int, view: memoryview, deadline: float | None, peer: Peer | None) -> None:
    while view.nbytes:
        try:
            n = os.readv(fd, [view])
        except BlockingIOError:
            _wait(fd, select.POLLIN, deadline, peer)
            continue
        if n == 0:
            raise EOFError("the peer closed its end")
        view = view[n:]


class _FdSink:
    """The file-like object pyarrow's IPC writer writes its buffers to.

    Small pieces (metadata, padding, small buffers) are gathered into one write; large
    buffers go to the fd straight from Arrow memory.
    """

    closed = False
    _SMALL = 64 * 1024

    def __init__(self, fd: int, deadline: float | None, peer: Peer | None):
        self.fd, self.deadline, self.peer = fd, deadline, peer
        self.pending = bytearray()

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        if view.nbytes < self._SMALL:
            self.pending += view
            if len(self.pending) >= self._SMALL:
                self.flush()
        else:
            self.flush()
            _write_all(self.fd, view, self.deadline, self.peer)
        return view.nbytes

    def flush(self) -> None:
        if self.pending:
            _write_all(self.fd, self.pending, self.deadline, self.peer)
            self.pending = bytearray()


def send(fd: int, header: dict[str, Any], tables: list[pa.Table], deadline: float | None = None,
         peer: Peer | None = None, sizes: list[int] | None = None) -> None:
    """Write one frame: ``header`` (``sizes`` is added) then each table as an IPC stream."""
    sizes = sizes if sizes is not None else [ipc_size(t) for t in tables]
    raw = json.dumps({**header, "sizes": sizes}).encode()
    sink = _FdSink(fd, deadline, peer)
    sink.write(_LEN.pack(len(raw)) + raw)
    for t in tables:
        with pa.ipc.new_stream(sink, t.schema) as w:
            w.write_table(t)
    sink.flush()


def recv(fd: int, deadline: float | None = None, peer: Peer | None = None,
         max_bytes: int | None = None) -> tuple[dict[str, Any], list[pa.Table]]:
    """Read one frame: its header and tables. ``max_bytes`` caps the tables' total size."""
    head = bytearray(_LEN.size)
    _read_into(fd, memoryview(head), deadline, peer)
    (n,) = _LEN.unpack(head)
    if n > MAX_HEADER_BYTES:
        raise ValueError(f"a frame header of {n} bytes (at most {MAX_HEADER_BYTES})")
    raw = bytearray(n)
    _read_into(fd, memoryview(raw), deadline, peer)
    try:
        header = json.loads(raw)
        sizes = [int(s) for s in header.pop("sizes")]
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"a frame header that is not valid JSON with sizes: {e}") from None
    if any(s <= 0 for s in sizes) or (max_bytes is not None and sum(sizes) > max_bytes):
        raise ValueError(f"Arrow streams of {sizes} bytes (at most {max_bytes} in all)")
    tables = []
    for size in sizes:
        buf = pa.allocate_buffer(size)
        _read_into(fd, memoryview(buf), deadline, peer)
        try:
            tables.append(pa.ipc.open_stream(buf).read_all())
        except (pa.ArrowInvalid, OSError) as e:
            raise ValueError(f"an Arrow stream that cannot be read: {e}") from None
    return header, tables
