"""Decode a micro-batch of JSON messages into Arrow in one go; find the poison ones only when
the batch as a whole does not decode."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.json as pajson

from simbdp.stream.brokers.base import Delivery

if TYPE_CHECKING:
    from simbdp.crypto.messages import MessageDecryptor

__all__ = ["Decoded", "decode_batch"]

MSG_COLUMN = "_simbdp_msg"


@dataclass
class Decoded:
    """Rows of the messages that decoded (column ``_simbdp_msg`` = index into ``good``),
    and the poison messages with their reasons."""

    rows: pa.Table
    good: list[Delivery]
    poison: list[tuple[Delivery, str]] = field(default_factory=list)


def _parse(bodies: list[bytes] | bytes) -> pa.Table:
    buf = bodies if isinstance(bodies, bytes) else b"\n".join(bodies)
    # one block, one thread: a micro-batch is a few MB, and splitting it into blocks for
    # threads cost twice the time of parsing it (measured: 9.4 vs 4.5 ms for 5,000 messages)
    return pajson.read_json(io.BytesIO(buf), read_options=pajson.ReadOptions(
        block_size=max(1 << 20, len(buf) + 1), use_threads=False))


def _msg_index(n: int) -> pa.Array:
    return pa.array(np.arange(n, dtype=np.int64))


def decode_batch(deliveries: list[Delivery], max_message_bytes: int,
                 decrypt: MessageDecryptor | None = None) -> Decoded:
    """Vectorised on the happy path: the bodies are joined as JSON lines and parsed by Arrow;
    the checks (size, one line each) run on the joined bytes, not per message. ``decrypt``
    opens encrypted messages first; those that do not open are poison."""
    if decrypt is None:
        return _decode(deliveries, max_message_bytes)
    with decrypt.opened(deliveries) as (plain, sealed_poison):
        decoded = _decode(plain, max_message_bytes)
    decoded.poison[:0] = sealed_poison
    return decoded


def _decode(deliveries: list[Delivery], max_message_bytes: int) -> Decoded:
    if deliveries:
        bodies = [d.body for d in deliveries]
        if max(map(len, bodies)) <= max_message_bytes:
            buf = b"\n".join(bodies)
            if buf.count(b"\n") == len(bodies) - 1 and b"\r" not in buf:
                try:
                    table = _parse(buf)
                    if table.num_rows == len(bodies):
                        return Decoded(table.append_column(MSG_COLUMN, _msg_index(len(bodies))),
                                       list(deliveries))
                except pa.ArrowInvalid:
                    pass  # find the poison message by message below
    good: list[Delivery] = []
    poison: list[tuple[Delivery, str]] = []
    for d in deliveries:
        if len(d.body) > max_message_bytes:
            poison.append((d, f"message {d.id!r} is {len(d.body)} bytes, over the limit of "
                              f"{max_message_bytes}"))
        elif b"\n" in d.body or b"\r" in d.body:
            # pretty-printed JSON: normalise it to one line (rare, per message)
            value = _object(d, poison)
            if value is not None:
                d.body = json.dumps(value).encode()
                good.append(d)
        else:
            good.append(d)
    if not good:
        return Decoded(pa.table({MSG_COLUMN: pa.array([], pa.int64())}), [], poison)
    try:
        table = _parse([d.body for d in good])
        if table.num_rows != len(good):
            raise pa.ArrowInvalid("row count differs from message count")
    except pa.ArrowInvalid:
        table, good = _decode_each(good, poison)
    return Decoded(table.append_column(MSG_COLUMN, _msg_index(len(good))), good, poison)


def _object(d: Delivery, poison: list[tuple[Delivery, str]]) -> dict[str, object] | None:
    """The message's JSON object, or None after recording why it is poison."""
    try:
        value = json.loads(d.body)
    except ValueError as e:
        poison.append((d, f"message {d.id!r} is not valid JSON: {e}"))
        return None
    if not isinstance(value, dict):
        poison.append((d, f"message {d.id!r} is not a JSON object ({type(value).__name__})"))
        return None
    return value


def _as_text(t: pa.Table) -> pa.Table:
    cols = []
    for col in t.columns:
        try:
            cols.append(col.cast(pa.string()))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            cols.append(pa.chunked_array([pa.array([None if v is None else json.dumps(v)
                                                    for v in col.to_pylist()], pa.string())]))
    return pa.table(cols, names=t.column_names)


def _decode_each(candidates: list[Delivery], poison: list[tuple[Delivery, str]]
                 ) -> tuple[pa.Table, list[Delivery]]:
    good = [d for d in candidates if _object(d, poison) is not None]
    if not good:
        return pa.table({}), []
    try:
        return _parse([d.body for d in good]), good
    except pa.ArrowInvalid:
        # objects whose fields disagree in type: let Arrow see them one by one
        tables, kept = [], []
        for d in good:
            try:
                tables.append(_parse([d.body]))
                kept.append(d)
            except pa.ArrowInvalid as e:
                poison.append((d, f"message {d.id!r} cannot be decoded: {e}"))
        try:
            return pa.concat_tables(tables, promote_options="permissive"), kept
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            # a field is a number in one message and text in another: keep them all as text;
            # the cast to the table's types then rejects exactly the rows that do not fit
            return pa.concat_tables([_as_text(t) for t in tables],
                                    promote_options="permissive"), kept
