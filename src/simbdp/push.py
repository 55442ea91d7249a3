"""The push client (the seeds' fetchdata): send a folder's allowed files to simbdp over HTTP.

It reads the tenant's constraints from the server, uploads only files that meet them (the
others are listed with the reason), in parallel, and resumes cleanly: a file whose content
was already ingested is reported as such and not sent again.

With ``encrypt`` (the tenant's keyset file) each plain file is sent encrypted as ``NAME.enc``
(Tink StreamingAead; see :mod:`simbdp.crypto.files`). The encrypted copy is kept in the
folder's ``.simbdp-encrypted/``, named by the plain content's hash and the key, so a resumed
push sends the same bytes and the server's ledger recognises them.
"""

from __future__ import annotations

import hashlib
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.progress import Progress

from simbdp.batch.staging import check_name
from simbdp.errors import AuthError, ConfigError, Rejected, ServerUnreachable
from simbdp.formats import detect_format, is_encrypted
from simbdp.units import format_bytes

__all__ = ["ENCRYPTED_COPIES", "PushResult", "push"]

#: the folder (inside the pushed folder) of the encrypted copies of its files
ENCRYPTED_COPIES = ".simbdp-encrypted"


@dataclass
class PushResult:
    file: str
    status: str  # sent | skipped | already_ingested | failed
    reason: str = ""


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _plan(folder: Path, profile: dict[str, Any]) -> tuple[list[Path], list[PushResult]]:
    limits = profile["batch"]
    ok, skipped = [], []
    for p in sorted(folder.iterdir()):
        if not p.is_file():
            continue
        try:  # the server's name rules: what it would refuse is not sent
            check_name(profile["tenant_id"], p.name)
        except Rejected as e:
            skipped.append(PushResult(p.name, "skipped", str(e)))
            continue
        detected = detect_format(p.name)
        if detected is None or detected[0] not in limits["file_types"]:
            skipped.append(PushResult(p.name, "skipped", "file type not allowed (allowed: "
                                      f"{', '.join(limits['file_types'])})"))
        elif p.stat().st_size == 0:
            skipped.append(PushResult(p.name, "skipped", "empty file"))
        elif p.stat().st_size > limits["max_file_bytes"]:
            skipped.append(PushResult(p.name, "skipped", f"over the limit of "
                                      f"{format_bytes(limits['max_file_bytes'])} per file"))
        else:
            ok.append(p)
    return ok, skipped


def _encrypted_copy(path: Path, keyset_file: Path) -> Path:
    """The file encrypted with the keyset's primary key, made once per content and key."""
    from simbdp.crypto.files import encrypt_file
    from simbdp.crypto.keyset import parse_keyset, read_keyset_doc

    keyset = parse_keyset(read_keyset_doc(keyset_file), keyset_file)
    copy = path.parent / ENCRYPTED_COPIES / f"{_sha256(path)}-{keyset.file_key_ids[0]}.enc"
    if not copy.exists():
        copy.parent.mkdir(mode=0o700, exist_ok=True)
        encrypt_file(keyset, path, copy)
    return copy


def _message(r: httpx.Response) -> str:
    try:
        return str(r.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return r.text[:200] or r.reason_phrase


def _profile(client: httpx.Client, base: str, tenant: str) -> dict[str, Any]:
    """The tenant's profile from the server; a refusal raised as the error it stands for."""
    try:
        r = client.get(f"{base}/profile")
    except httpx.TransportError as e:
        raise ServerUnreachable(f"cannot reach the server at {base.split('/v1/')[0]}: {e}; "
                                "check --server and that `simbdp serve` runs there") from e
    if r.status_code in (401, 403):
        raise AuthError(f"the server refused the key ({r.status_code}): {_message(r)}")
    if r.status_code == 404:
        raise ConfigError(f"tenant {tenant!r}: {_message(r)}; check --tenant and that the "
                          "key is this tenant's")
    if r.status_code != 200:
        raise ServerUnreachable(f"the server answered {r.status_code} for tenant {tenant!r}'s "
                                f"profile: {_message(r)}; try again later")
    return r.json()  # type: ignore[no-any-return]


def push(server: str, key: str, tenant: str, folder: Path, *, workers: int = 4,
         watch: bool = False, verify: bool | str | ssl.SSLContext = True, progress: bool = True,
         poll_secs: float = 2.0, encrypt: Path | None = None) -> list[PushResult]:
    """Upload the allowed files of ``folder``; with ``watch``, keep sending new ones; with
    ``encrypt`` (a keyset file), each file not named ``*.enc`` is sent encrypted as ``NAME.enc``.

    Raises ServerUnreachable (no connection, or the server fails), AuthError (a wrong or
    revoked key: 401/403), ConfigError (no such tenant for this key: 404). A file the server
    refuses is a ``failed`` result, not an exception.
    """
    headers = {"Authorization": f"Bearer {key}"}
    if isinstance(verify, str):  # a CA file, e.g. the provider's self-signed certificate
        verify = ssl.create_default_context(cafile=verify)
    base = f"{server.rstrip('/')}/v1/tenants/{tenant}"
    sent: set[str] = set()
    results: list[PushResult] = []
    with httpx.Client(headers=headers, verify=verify, timeout=600) as client:
        profile = _profile(client, base, tenant)

        def one(path: Path) -> PushResult:
            name = path.name
            if encrypt is not None and not is_encrypted(name):
                path, name = _encrypted_copy(path, encrypt), f"{name}.enc"
            sha = _sha256(path)
            done = client.get(f"{base}/records", params={"content_key": f"sha256:{sha}",
                                                         "outcome": "processed", "limit": 1})
            if done.status_code == 200 and done.json():
                return PushResult(name, "already_ingested",
                                  f"same content ingested as {done.json()[0]['source']!r}")
            with path.open("rb") as f:
                up = client.put(f"{base}/files/{name}", content=f,
                                headers={"X-Content-SHA256": sha,
                                         "Content-Length": str(path.stat().st_size)})
            if up.status_code == 202:
                return PushResult(name, "sent")
            return PushResult(name, "failed", f"{up.status_code}: {_message(up)}")

        while True:
            todo, skipped = _plan(folder, profile)
            todo = [p for p in todo if p.name not in sent]
            results += [s for s in skipped if s.file not in sent]
            sent.update(s.file for s in skipped)
            if len(todo) > profile["batch"]["max_files_per_ingestion"]:
                todo = todo[: profile["batch"]["max_files_per_ingestion"]]
            with Progress(disable=not progress) as bar, ThreadPoolExecutor(workers) as pool:
                task = bar.add_task("uploading", total=len(todo))
                for local, res in zip(todo, pool.map(one, todo), strict=True):
                    results.append(res)
                    sent.add(local.name)  # res.file may be its encrypted name
                    bar.advance(task)
            if not watch:
                return results
            time.sleep(poll_secs)
