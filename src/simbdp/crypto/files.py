"""Encrypted files: Tink StreamingAead (AES256_GCM_HKDF_1MB), decrypted while read.

Tink's format (https://developers.google.com/tink/streaming-aead/aes_gcm_hkdf_streaming): a
header (a random salt and nonce prefix; the file's key is derived from the keyset's key with
HKDF), then 1 MiB segments, each sealed with AES-GCM under a nonce holding the segment's number
and a last-segment flag. Truncation, reordering and a changed byte all fail authentication; the
reader holds about one segment in memory. The keyset may hold two keys (a rotation): Tink tries
each on the first segment.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

import tink

from simbdp.crypto.keyset import Keyset, tenant_keyset
from simbdp.errors import Rejected
from simbdp.formats.base import is_encrypted
from simbdp.profiles.models import TenantProfile
from simbdp.profiles.platform import PlatformConfig

__all__ = ["ASSOCIATED_DATA", "FileDecryptor", "encrypt_file", "file_decryptor"]

#: bound into every file's authentication tag: a simbdp file, version 1
ASSOCIATED_DATA = b"simbdp-file-v1"
_COPY = 1024 * 1024
_FIRST = 4096


class _Decrypting(io.RawIOBase):
    """Tink's decrypting stream, its errors turned into Rejected naming the file (never a key)."""

    def __init__(self, stream: BinaryIO, label: str, keys: int):
        super().__init__()
        self._stream, self._label, self._keys, self._plain = stream, label, keys, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if self._plain == 0 and (size is None or size < 0 or size > _FIRST):
            # a small first read opens the first segment only: Tink settles on the key there,
            # so damage further on is reported as damage, not as a wrong key
            size = _FIRST
        try:
            data = self._stream.read(-1 if size is None else size)
        except tink.TinkError as e:
            raise self._error(e) from None
        self._plain += len(data)
        return data

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def _error(self, e: tink.TinkError) -> Rejected:
        if "No matching key" in str(e) or self._plain == 0:
            keys = "its key" if self._keys == 1 else f"any of its {self._keys} keys"
            return Rejected(f"{self._label}: cannot be decrypted with {keys} (it was "
                            "encrypted with another key, a wrong or rotated-out one, or its "
                            "start is damaged)", "wrong_key")
        return Rejected(f"{self._label}: the encrypted file fails authentication after "
                        f"{self._plain} decrypted bytes: it is truncated or was altered",
                        "corrupt_encrypted")

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(tink.TinkError):
                self._stream.close()
        super().close()


class FileDecryptor:
    """Opens a tenant's ``*.enc`` files as plain byte streams (formats' ``Decryptor``)."""

    def __init__(self, keyset: Keyset):
        self._keyset = keyset

    def open(self, path: Path, label: str) -> BinaryIO:
        """The decrypted content of ``path``; reading raises Rejected (``wrong_key``,
        ``corrupt_encrypted``) naming ``label`` when it does not authenticate."""
        raw = path.open("rb")
        try:
            stream = self._keyset.files.new_decrypting_stream(raw, ASSOCIATED_DATA)
        except (tink.TinkError, ValueError):
            raw.close()
            raise Rejected(f"{label}: not an encrypted file", "corrupt_encrypted") from None
        return io.BufferedReader(_Decrypting(stream, label,  # type: ignore[arg-type]
                                             len(self._keyset.file_key_ids)), _COPY)


def encrypt_file(keyset: Keyset, source: Path, dest: Path) -> int:
    """Encrypt ``source`` into ``dest`` with the keyset's primary file key, streaming; written
    to a temporary file beside ``dest`` and renamed at the end. Returns ``dest``'s size."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            with source.open("rb") as src, keyset.files.new_encrypting_stream(
                    _Unclosed(out), ASSOCIATED_DATA) as enc:
                while chunk := src.read(_COPY):
                    enc.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest.stat().st_size


class _Unclosed(io.RawIOBase):
    """A writable view of a file that Tink's stream may close without closing the file."""

    def __init__(self, f: BinaryIO):
        super().__init__()
        self._f = f

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        return self._f.write(b)


def file_decryptor(config: PlatformConfig, profile: TenantProfile, name: str
                   ) -> FileDecryptor | None:
    """The decryptor for the tenant's file ``name``: None for a plain file.

    Raises Rejected: ``no_key`` (an ``*.enc`` file, but the profile names no keyset),
    ``not_encrypted`` (a plain file, but the profile requires encryption), ``keyset_unusable``.
    """
    tenant = profile.tenant_id
    if not is_encrypted(name):
        if profile.encryption is not None and profile.encryption.required:
            raise Rejected(f"tenant {tenant!r}: {name!r} is not encrypted, and the tenant's "
                           "profile requires encrypted files (name them *.enc; see `simbdp "
                           "encrypt`)", "not_encrypted")
        return None
    keyset = tenant_keyset(config, profile)
    if keyset is None:
        raise Rejected(f"tenant {tenant!r}: {name!r} is encrypted, but the tenant has no "
                       "keyset registered (profile: encryption.keyset)", "no_key")
    return FileDecryptor(keyset)
