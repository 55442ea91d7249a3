"""Readers: CSV, JSON, JSON lines and Parquet (optionally gzip/zstd, optionally
encrypted) as bounded Arrow batches."""

from simbdp.formats.base import Compression, Decryptor, ReadOptions, ReadStats, is_encrypted
from simbdp.formats.readers import detect_format, read_batches

__all__ = ["Compression", "Decryptor", "ReadOptions", "ReadStats", "detect_format",
           "is_encrypted", "read_batches"]
