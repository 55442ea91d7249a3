"""The reader contract: a file becomes Arrow record batches, in bounded chunks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pyarrow as pa

from simbdp.profiles.models import CsvOptions, FileType

__all__ = ["Compression", "ReadOptions", "ReadStats"]

Compression = Literal["none", "gzip", "zstd"]


@dataclass(frozen=True)
class ReadOptions:
    """How to read one file.

    ``column_types`` pins the Arrow type of named columns (CSV and JSON lines); other columns
    are inferred. ``block_bytes`` bounds the bytes parsed per batch, so memory stays flat.
    ``max_bytes`` (decompressed), ``max_rows`` and ``max_columns`` stop a file with
    ``Rejected`` as soon as it passes them; ``tenant`` is named in every error.
    """

    file_type: FileType
    compression: Compression = "none"
    csv: CsvOptions = field(default_factory=CsvOptions)
    column_types: dict[str, pa.DataType] = field(default_factory=dict)
    block_bytes: int = 16 * 1024**2
    tenant: str | None = None
    max_bytes: int | None = None
    max_rows: int | None = None
    max_columns: int | None = None


@dataclass
class ReadStats:
    """What reading a file consumed so far: decompressed bytes and rows."""

    bytes_read: int = 0
    rows: int = 0
