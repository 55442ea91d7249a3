"""The error path: read a file again from its start to name its first bad line.

Only run after a reader failed, so plain Python per line is fine here. Line numbers are the
file's physical lines (a record with quoted newlines spans several; its first one is named).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterator

import pyarrow as pa

from simbdp.formats.base import ReadOptions

__all__ = ["locate"]


def locate(stream: pa.NativeFile, options: ReadOptions) -> str | None:
    """Describe the first bad line (UTF-8, field count, field size, JSON) or None."""
    try:
        buffered = io.BufferedReader(stream)  # type: ignore[arg-type]
        if options.file_type == "csv":
            return _locate_csv(buffered, options)
        return _locate_jsonl(buffered)
    except (pa.ArrowException, OSError, ValueError, EOFError):
        return None


class _Lines:
    """Decoded lines of a byte stream, counting them; stops at the first invalid UTF-8."""

    def __init__(self, stream: io.BufferedReader):
        self._stream, self.n, self.bad_utf8 = stream, 0, False
        self._decoder = codecs.getincrementaldecoder("utf-8")()

    def __iter__(self) -> Iterator[str]:
        for line in self._stream:
            self.n += 1
            try:
                yield self._decoder.decode(line)
            except UnicodeDecodeError:
                self.bad_utf8 = True
                return


def _locate_csv(stream: io.BufferedReader, options: ReadOptions) -> str | None:
    o = options.csv
    lines = _Lines(stream)
    limit = int(o.max_field_bytes)
    old = csv.field_size_limit(limit)
    try:
        reader = csv.reader(lines, delimiter=o.delimiter, quotechar=o.quote_char, strict=True)
        expected: int | None = None
        start = 1
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                if lines.bad_utf8:
                    break
                if "field limit" in str(e):
                    return (f"line {start}: a field is longer than the limit of {limit} bytes "
                            "(csv.max_field_bytes)")
                return f"line {start}: {e}"
            if fields:
                if expected is None:
                    expected = len(fields)
                elif len(fields) != expected:
                    return f"line {start}: expected {expected} fields, saw {len(fields)}"
            start = lines.n + 1
        if lines.bad_utf8:
            return f"line {lines.n}: invalid UTF-8"
        return None
    finally:
        csv.field_size_limit(old)


def _locate_jsonl(stream: io.BufferedReader) -> str | None:
    lines = _Lines(stream)
    for text in lines:
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            return f"line {lines.n}: invalid JSON ({e.msg})"
        if not isinstance(value, dict):
            return f"line {lines.n}: expected a JSON object, saw {type(value).__name__}"
    if lines.bad_utf8:
        return f"line {lines.n}: invalid UTF-8"
    return None
