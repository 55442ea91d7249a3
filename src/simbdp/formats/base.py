"""The reader contract: a file becomes Arrow record batches, in bounded chunks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import BinaryIO, Literal, Protocol

import pyarrow as pa

from simbdp.profiles.base import FileType
from simbdp.profiles.models import CsvOptions

__all__ = ["ENCRYPTED_SUFFIX", "Compression", "Decryptor", "ReadOptions", "ReadStats",
           "is_encrypted"]

Compression = Literal["none", "gzip", "zstd"]
#: the last suffix of an encrypted file: ``orders.csv.enc``, ``orders.csv.gz.enc``
ENCRYPTED_SUFFIX = ".enc"


def is_encrypted(filename: str) -> bool:
    """Whether the file's name says it is encrypted (``*.enc``)."""
    return PurePath(filename.lower()).suffix == ENCRYPTED_SUFFIX


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
