"""Publishing messages to a tenant's queue, from Python or ``simbdp publish``, and handing a
tenant its own broker credentials for its own clients."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from simbdp.errors import BrokerUnavailable, PublishInterrupted
from simbdp.profiles import Platform
from simbdp.stream.brokers import OutMessage, TenantCredentials, open_broker

if TYPE_CHECKING:
    from simbdp.crypto.keyset import Keyset

__all__ = ["issue_broker_credentials", "make_messages", "publish", "publish_jsonl"]


def make_messages(rows: Iterable[dict[str, Any] | bytes], *, id_prefix: str | None = None,
                  id_field: str | None = None, table: str | None = None) -> list[OutMessage]:
    """Messages with ids (a field's value, ``<prefix>:<n>``, or a random uuid) and the
    publish time; ``table`` names the target table (header ``table``). Callers that may
    retry (the CLI, the API) pass a prefix derived from the content, so a retry loads once."""
    now = time.time()
    headers = {"table": table} if table else {}
    out = []
    for n, row in enumerate(rows):
        body = row if isinstance(row, bytes) else json.dumps(row).encode()
        if id_field and isinstance(row, dict) and id_field in row:
            mid = str(row[id_field])
        elif id_prefix is not None:
            mid = f"{id_prefix}:{n}"
        else:
            mid = uuid.uuid4().hex
        out.append(OutMessage(id=mid, body=body, published_at=now, headers=headers))
    return out


async def publish(platform: Platform, tenant: str, messages: list[OutMessage], *,
                  batch: int = 1000, rate: float | None = None) -> int:
    """Publish durably (confirmed by the broker), ``batch`` at a time, at most ``rate``/s.

    Raises BrokerUnavailable (nothing confirmed), PublishInterrupted (the broker failed after
    some batches were confirmed: it says how many), ConfigError (unknown tenant).
    """
    platform.tenant(tenant)
    broker = open_broker(platform.config.broker)
    confirmed = 0
    try:
        await broker.connect()
        await broker.ensure_tenant(tenant)
        started = time.monotonic()
        for i in range(0, len(messages), batch):
            chunk = messages[i:i + batch]
            now = time.time()
            chunk = [OutMessage(m.id, m.body, now, m.headers) for m in chunk]
            try:
                await broker.publish(tenant, chunk)
            except BrokerUnavailable as e:
                if confirmed:
                    raise PublishInterrupted(tenant, confirmed, len(messages), str(e)) from e
                raise
            confirmed += len(chunk)
            if rate:
                ahead = (i + len(chunk)) / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
    finally:
        await broker.close()
    return len(messages)


def publish_jsonl(platform: Platform, tenant: str, path: Path, *, rate: float | None = None,
                  id_field: str | None = None, table: str | None = None,
                  keyset: Keyset | None = None) -> int:
    """Publish each line of a JSON-lines file as one message. Ids default to
    ``<content hash>:<line>``, so publishing the same file twice loads it once. With
    ``keyset``, each message is sealed with its primary message key."""
    data = path.read_bytes()
    prefix = hashlib.sha256(data).hexdigest()[:16]
    lines = [ln for ln in data.splitlines() if ln.strip()]
    if id_field:
        rows: list[dict[str, Any] | bytes] = []
        for ln in lines:
            try:
                rows.append(json.loads(ln))
            except ValueError:
                rows.append(ln)
    else:
        rows = list(lines)
    msgs = make_messages(rows, id_prefix=prefix, id_field=id_field, table=table)
    if keyset is not None:
        from simbdp.crypto.messages import encrypt_messages

        msgs = encrypt_messages(keyset, msgs)
    return asyncio.run(publish(platform, tenant, msgs, rate=rate))


async def issue_broker_credentials(platform: Platform, tenant: str, *, rotate: bool = False
                                   ) -> TenantCredentials:
    """The tenant's own broker user and a secret shown once (created now, or rotated).

    Raises ConfigError (unknown tenant, a broker without per-tenant users),
    CredentialsIssued (the user exists and ``rotate`` is false), BrokerUnavailable.
    """
    platform.tenant(tenant)
    broker = open_broker(platform.config.broker)
    try:
        return await broker.issue_credentials(tenant, rotate=rotate)
    finally:
        await broker.close()
