"""Readers: CSV, JSON, JSON lines and Parquet (optionally gzip/zstd, optionally
encrypted) as bounded Arrow batches."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from simbdp.formats.base import (
    Compression,
    Decryptor,
    ReadOptions,
    ReadStats,
    detect_format,
    is_encrypted,
)

if TYPE_CHECKING:
    from simbdp.formats.readers import read_batches

__all__ = ["Compression", "Decryptor", "ReadOptions", "ReadStats", "detect_format",
           "is_encrypted", "read_batches"]


def __getattr__(name: str) -> Any:
    # lazily: checking a file's name (the batch manager) needs no pyarrow, reading does
    if name == "read_batches":
        from simbdp.formats.readers import read_batches

        return read_batches
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
