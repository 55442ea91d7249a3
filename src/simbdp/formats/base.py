"""The reader contract: a file becomes Arrow record batches, in bounded chunks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pyarrow as pa

from simbdp.profiles.models import CsvOptions, FileType

__all__ = ["Compression", "ReadOptions"]

Compression = Literal["none", "gzip", "zstd"]


@dataclass(frozen=True)
class ReadOptions:
    """How to read one file.

    ``column_types`` pins the Arrow type of named columns (CSV and JSON); other columns are
    inferred. ``block_bytes`` bounds the bytes parsed per batch, so memory stays flat.
    """

    file_type: FileType
    compression: Compression = "none"
    csv: CsvOptions = field(default_factory=CsvOptions)
    column_types: dict[str, pa.DataType] = field(default_factory=dict)
    block_bytes: int = 16 * 1024**2
