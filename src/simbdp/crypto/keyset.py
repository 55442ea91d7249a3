"""A tenant's keyset: Tink keys for files (streaming AEAD) and messages (AEAD), in one file.

The file is JSON: ``{"format": "simbdp-keyset-1", "files": <Tink keyset>, "messages": <Tink
keyset>}``, each part in Tink's JSON keyset format. Each part holds one primary key (used to
encrypt) and, during a rotation, the previous key (still accepted to decrypt). The platform
reads it only if it is a regular file owned by the platform's user and readable by nobody else
(0600), kept outside the tenants' data and app folders.

No error raised here quotes the file's content: a key never reaches a log, record or message.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tink
from tink import aead, secret_key_access, streaming_aead

from simbdp.errors import Rejected
from simbdp.profiles.models import TenantProfile
from simbdp.profiles.platform import PlatformConfig

__all__ = ["KEYSET_FORMAT", "Keyset", "KeysetError", "load_keyset", "new_keyset",
           "parse_keyset", "read_keyset_doc", "retire_keyset", "rotate_keyset", "save_keyset",
           "tenant_keyset"]

KEYSET_FORMAT = "simbdp-keyset-1"
#: keys kept at once: the primary and the one it replaced (a rotation in progress)
MAX_KEYS = 2
_PARTS = ("files", "messages")

streaming_aead.register()
aead.register()


class KeysetError(Rejected):
    """A keyset that cannot be used (missing, unsafe permissions, not a keyset)."""

    def __init__(self, message: str):
        super().__init__(message, "keyset_unusable")


@dataclass(frozen=True)
class Keyset:
    """A parsed keyset: ``files`` (StreamingAead) and ``messages`` (Aead) primitives."""

    path: Path
    files: streaming_aead.StreamingAead
    messages: aead.Aead
    #: key ids of the messages part (ids are not secret), primary first
    message_key_ids: tuple[int, ...]
    #: key ids of the files part, primary first
    file_key_ids: tuple[int, ...]


def _templates() -> dict[str, Any]:
    return {"files": streaming_aead.streaming_aead_key_templates.AES256_GCM_HKDF_1MB,
            "messages": aead.aead_key_templates.AES256_GCM}


def _fresh_part(part: str) -> dict[str, Any]:
    handle = tink.new_keyset_handle(_templates()[part])
    return json.loads(tink.json_proto_keyset_format.serialize(handle, secret_key_access.TOKEN))  # type: ignore[no-any-return]


def new_keyset() -> dict[str, Any]:
    """A fresh keyset document: one new key per part."""
    return {"format": KEYSET_FORMAT, **{p: _fresh_part(p) for p in _PARTS}}


def rotate_keyset(doc: dict[str, Any]) -> dict[str, Any]:
    """A new primary key per part; the previous primary stays to decrypt, older keys go."""
    out: dict[str, Any] = {"format": KEYSET_FORMAT}
    for part in _PARTS:
        old = doc[part]
        fresh = _fresh_part(part)
        taken = {k["keyId"] for k in old["key"]}
        while fresh["primaryKeyId"] in taken:  # 32-bit random ids: a clash is rare
            fresh = _fresh_part(part)
        previous = [k for k in old["key"] if k["keyId"] == old["primaryKeyId"]]
        out[part] = {"primaryKeyId": fresh["primaryKeyId"],
                     "key": fresh["key"] + previous[: MAX_KEYS - 1]}
    return out


def retire_keyset(doc: dict[str, Any]) -> dict[str, Any]:
    """Drop every key but the primary: the end of a rotation."""
    out: dict[str, Any] = {"format": KEYSET_FORMAT}
    for part in _PARTS:
        d = doc[part]
        out[part] = {"primaryKeyId": d["primaryKeyId"],
                     "key": [k for k in d["key"] if k["keyId"] == d["primaryKeyId"]]}
    return out


def save_keyset(doc: dict[str, Any], path: Path, *, overwrite: bool = False) -> None:
    """Write the keyset (0600, atomically). Raises FileExistsError unless ``overwrite``."""
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; give another path")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_keyset_doc(path: Path, owner: str = "") -> dict[str, Any]:
    """The keyset document of ``path`` (no permission check: the tenant's own copy)."""
    who = f"{owner}: " if owner else ""
    try:
        text = path.read_text()
    except OSError as e:
        raise KeysetError(f"{who}keyset {str(path)!r} cannot be read ({e.strerror})") from None
    try:
        doc = json.loads(text)
    except ValueError:
        raise KeysetError(f"{who}keyset {str(path)!r} is not JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != KEYSET_FORMAT or any(
            not isinstance(doc.get(p), dict) for p in _PARTS):
        raise KeysetError(f"{who}keyset {str(path)!r} is not a simbdp keyset (make one with "
                          "`simbdp keyset new`)")
    return doc


def _check_private(path: Path, owner: str) -> None:
    try:
        st = path.stat()
    except OSError as e:
        raise KeysetError(f"{owner}: keyset {str(path)!r} cannot be read ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeysetError(f"{owner}: keyset {str(path)!r} is not a regular file")
    if st.st_uid != os.geteuid():
        raise KeysetError(f"{owner}: keyset {str(path)!r} is not owned by the platform's user")
    if st.st_mode & 0o077:
        raise KeysetError(f"{owner}: keyset {str(path)!r} is readable by others (mode "
                          f"{stat.S_IMODE(st.st_mode):04o}); `chmod 600` it")


def parse_keyset(doc: dict[str, Any], path: Path, owner: str = "") -> Keyset:
    """The primitives of a keyset document. Raises KeysetError without quoting it."""
    who = f"{owner}: " if owner else ""
    try:
        handles = {p: tink.json_proto_keyset_format.parse(json.dumps(doc[p]),
                                                          secret_key_access.TOKEN)
                   for p in _PARTS}
        files = handles["files"].primitive(streaming_aead.StreamingAead)
        messages = handles["messages"].primitive(aead.Aead)
    except (tink.TinkError, ValueError, TypeError, KeyError):
        # Tink's own message could describe the key: it is left out on purpose
        raise KeysetError(f"{who}keyset {str(path)!r} holds no valid Tink keys for files "
                          "(AES256_GCM_HKDF_1MB) and messages (AES256_GCM)") from None

    def ids(part: str) -> tuple[int, ...]:
        d = doc[part]
        rest = [k["keyId"] for k in d["key"] if k["keyId"] != d["primaryKeyId"]]
        return (int(d["primaryKeyId"]), *map(int, rest))

    return Keyset(path=path, files=files, messages=messages,
                  message_key_ids=ids("messages"), file_key_ids=ids("files"))


_cache: dict[Path, tuple[tuple[int, int, int], Keyset]] = {}
_lock = threading.Lock()


def load_keyset(path: Path, tenant: str, forbidden: list[Path] | None = None) -> Keyset:
    """The platform's copy of a tenant's keyset, checked: a regular file of the platform's user,
    mode 0600, not under any of ``forbidden`` (the tenants' folders). Kept in memory until the
    file changes (a rotation is picked up by the next file or micro-batch).

    Raises KeysetError (a Rejected, code ``keyset_unusable``) naming the tenant and the path.
    """
    owner = f"tenant {tenant!r}"
    real = path.resolve()
    for folder in forbidden or []:
        if real.is_relative_to(folder.resolve()):
            raise KeysetError(f"{owner}: keyset {str(path)!r} lies in {str(folder)!r}, which "
                              "tenants can write or read; keep it outside (e.g. home/keys/)")
    _check_private(real, owner)
    st = real.stat()
    sig = (st.st_mtime_ns, st.st_size, st.st_ino)
    with _lock:
        hit = _cache.get(real)
        if hit is not None and hit[0] == sig:
            return hit[1]
    keyset = parse_keyset(read_keyset_doc(real, owner), path, owner)
    with _lock:
        _cache[real] = (sig, keyset)
    return keyset


def tenant_keyset(config: PlatformConfig, profile: TenantProfile) -> Keyset | None:
    """The keyset the tenant's profile names (``encryption.keyset``, relative to the home), or
    None if it names none. Raises KeysetError as :func:`load_keyset`."""
    if profile.encryption is None:
        return None
    path = config.home / profile.encryption.keyset
    return load_keyset(path, profile.tenant_id,
                       forbidden=[config.tenant_dir(profile.tenant_id).parent,
                                  config.apps_dir(profile.tenant_id).parent])
