"""API keys: created by the operator, shown once, stored only as hashes.

A key reads ``sbdp_<key_id>_<secret>``; the store keeps ``sha256(secret)`` under ``key_id``
(a 256-bit random secret needs no slow hash) and compares in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from simbdp.state.store import StateStore

__all__ = ["OPERATOR", "create_key", "list_keys", "revoke_key", "verify_key"]

OPERATOR = "*"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(store: StateStore, tenant: str) -> str:
    """A new key for ``tenant`` (or ``OPERATOR``); the plaintext is returned only here."""
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    store.db.execute("INSERT INTO api_keys (key_hash, key_id, tenant, created_at) "
                     "VALUES (?, ?, ?, ?)", [_hash(secret), key_id, tenant, time.time()])
    return f"sbdp_{key_id}_{secret}"


def revoke_key(store: StateStore, key_id: str) -> bool:
    return store.db.execute("UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND "
                            "revoked_at IS NULL", [time.time(), key_id]) == 1


def list_keys(store: StateStore) -> list[dict[str, object]]:
    return store.db.query("SELECT key_id, tenant, created_at, revoked_at FROM api_keys "
                          "ORDER BY created_at")


def verify_key(store: StateStore, key: str) -> str | None:
    """The tenant (or ``OPERATOR``) a valid, unrevoked key belongs to; None otherwise."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != "sbdp":
        return None
    rows = store.db.query("SELECT key_hash, tenant, revoked_at FROM api_keys WHERE key_id = ?",
                          [parts[1]])
    if not rows or rows[0]["revoked_at"] is not None:
        return None
    if not hmac.compare_digest(rows[0]["key_hash"], _hash(parts[2])):
        return None
    return str(rows[0]["tenant"])
