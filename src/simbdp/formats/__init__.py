"""Readers: CSV, JSON, JSON lines and Parquet (optionally gzip/zstd) as bounded Arrow batches."""

from simbdp.formats.base import Compression, ReadOptions
from simbdp.formats.readers import detect_format, read_batches

__all__ = ["Compression", "ReadOptions", "detect_format", "read_batches"]
