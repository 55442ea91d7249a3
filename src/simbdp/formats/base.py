"""The reader contract: a file becomes Arrow record batches, in bounded chunks.

Light to import (no pyarrow): the batch manager checks file names with :func:`detect_format`
in a process that never reads a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, BinaryIO, Literal, Protocol

from simbdp.profiles.base import FileType
from simbdp.profiles.models import CsvOptions

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["ENCRYPTED_SUFFIX", "Compression", "Decryptor", "ReadOptions", "ReadStats",
           "detect_format", "is_encrypted"]

Compression = Literal["none", "gzip", "zstd"]
#: the last suffix of an encrypted file: ``orders.csv.enc``, ``orders.csv.gz.enc``
ENCRYPTED_SUFFIX = ".enc"


_TYPES: dict[str, FileType] = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "jsonl",
                               ".ndjson": "jsonl", ".parquet": "parquet"}
_COMPRESSIONS: dict[str, Compression] = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd",
                                         ".zstd": "zstd"}


def is_encrypted(filename: str) -> bool:
    """Whether the file's name says it is encrypted (``*.enc``)."""
    return PurePath(filename.lower()).suffix == ENCRYPTED_SUFFIX


def detect_format(filename: str) -> tuple[FileType, Compression] | None:
    """File type and compression from the name's suffixes, or None if not a known type.
    A last ``.enc`` (encrypted) is looked through; Parquet cannot be read as a stream, so an
    encrypted (or compressed) one is not a known type."""
    p = PurePath(filename.lower())
    encrypted = p.suffix == ENCRYPTED_SUFFIX
    if encrypted:
        p = PurePath(p.stem)
    compression: Compression = "none"
    suffix = p.suffix
    if suffix in _COMPRESSIONS:
        compression = _COMPRESSIONS[suffix]
        suffix = PurePath(p.stem).suffix
    ftype = _TYPES.get(suffix)
    if ftype is None or (ftype == "parquet" and (compression != "none" or encrypted)):
        return None
    return ftype, compression


class Decryptor(Protocol):
    """Opens an encrypted file as its plain bytes (``simbdp.crypto.FileDecryptor``)."""

    def open(self, path: Path, label: str) -> BinaryIO:
        """A stream of the decrypted bytes; reading it raises Rejected naming ``label`` when
        the file does not authenticate (wrong key, truncated, altered)."""
        ...


@dataclass(frozen=True)
class ReadOptions:
    """How to read one file.

    ``column_types`` pins the Arrow type of named columns (CSV and JSON lines); other columns
    are inferred. ``block_bytes`` bounds the bytes parsed per batch, so memory stays flat.
    ``decrypt`` opens an encrypted file (decrypted, then decompressed, while read).
    ``max_bytes`` (decrypted and decompressed), ``max_rows`` and ``max_columns`` stop a file with
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
    decrypt: Decryptor | None = None


@dataclass
class ReadStats:
    """What reading a file consumed so far: decompressed bytes and rows."""

    bytes_read: int = 0
    rows: int = 0
