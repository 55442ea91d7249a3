"""Readers: CSV, JSON, JSON lines and Parquet (optionally gzip/zstd) as bounded Arrow batches."""

from simbdp.formats.base import Compression, ReadOptions, ReadStats
from simbdp.formats.readers import detect_format, read_batches

__all__ = ["Compression", "ReadOptions", "ReadStats", "detect_format", "read_batches"]
