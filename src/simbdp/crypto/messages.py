"""Encrypted messages: one Tink Aead (AES256_GCM) ciphertext per message body.

A message says it is encrypted with the header ``simbdp-encryption: tink-aead-v1``. Its body
is Tink's ciphertext: a 5-byte prefix (``0x01`` and the 4-byte id of the key that sealed it),
a 12-byte nonce, the sealed JSON object and a 16-byte tag. The id picks the key from the
tenant's keyset, so messages sealed with the old key of a rotation still open. The stream's
decode step opens them before parsing; one that does not open is dead-lettered with the reason
(unknown key id, fails authentication, no keyset), still sealed: plain text reaches only the
sink.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager

import tink

from simbdp.crypto.keyset import Keyset, tenant_keyset
from simbdp.errors import Rejected
from simbdp.profiles.models import TenantProfile
from simbdp.profiles.platform import PlatformConfig
from simbdp.stream.brokers.base import Delivery, OutMessage

__all__ = ["ASSOCIATED_DATA", "ENCRYPTION_HEADER", "ENCRYPTION_SCHEME", "MessageDecryptor",
           "encrypt_messages", "key_id"]

ENCRYPTION_HEADER = "simbdp-encryption"
ENCRYPTION_SCHEME = "tink-aead-v1"
#: bound into every message's tag: a simbdp message, version 1
ASSOCIATED_DATA = b"simbdp-message-v1"
_TINK_PREFIX = 0x01


def key_id(body: bytes) -> int | None:
    """The id of the key a Tink ciphertext names in its prefix, or None if it has none."""
    if len(body) < 5 or body[0] != _TINK_PREFIX:
        return None
    return int.from_bytes(body[1:5], "big")


def encrypt_messages(keyset: Keyset, messages: list[OutMessage]) -> list[OutMessage]:
    """The messages sealed with the keyset's primary message key, with the header set."""
    seal = keyset.messages.encrypt
    return [dataclasses.replace(m, body=seal(m.body, ASSOCIATED_DATA),
                                headers={**m.headers, ENCRYPTION_HEADER: ENCRYPTION_SCHEME})
            for m in messages]


class MessageDecryptor:
    """Opens a tenant's encrypted messages for the decode step (``decode_batch(decrypt=)``)."""

    def __init__(self, config: PlatformConfig, profile: TenantProfile):
        self._config, self._profile = config, profile
        self.tenant = profile.tenant_id

    @contextmanager
    def opened(self, deliveries: list[Delivery]
               ) -> Iterator[tuple[list[Delivery], list[tuple[Delivery, str]]]]:
        """``(plain, poison)``: the deliveries whose bodies are plain text for the duration of
        the block (the sealed bodies come back after it, so a message dead-lettered later is
        kept sealed), and the ones that do not open, with the reason."""
        plain: list[Delivery] = []
        poison: list[tuple[Delivery, str]] = []
        sealed: list[tuple[Delivery, bytes]] = []
        keyset: Keyset | Rejected | None = None
        loaded = False
        required = self._profile.encryption is not None and self._profile.encryption.required
        for d in deliveries:
            scheme = d.headers.get(ENCRYPTION_HEADER)
            if scheme is None:
                if required:
                    poison.append((d, f"tenant {self.tenant!r}: message {d.id!r} is not "
                                      "encrypted, and the tenant's profile requires it"))
                else:
                    plain.append(d)
                continue
            if not loaded:
                keyset, loaded = self._keyset(), True
            reason = self._why_not(d, scheme, keyset)
            if reason is not None:
                poison.append((d, f"tenant {self.tenant!r}: message {d.id!r}: {reason}"))
                continue
            if not isinstance(keyset, Keyset):  # _why_not said why already
                continue
            try:
                body = keyset.messages.decrypt(d.body, ASSOCIATED_DATA)
            except tink.TinkError:
                poison.append((d, f"tenant {self.tenant!r}: message {d.id!r} fails "
                                  f"authentication with key {key_id(d.body)}: it was altered"))
                continue
            sealed.append((d, d.body))
            d.body = body
            plain.append(d)
        try:
            yield plain, poison
        finally:
            for d, body in sealed:
                d.body = body

    def _keyset(self) -> Keyset | Rejected | None:
        try:
            return tenant_keyset(self._config, self._profile)
        except Rejected as e:
            return e

    @staticmethod
    def _why_not(d: Delivery, scheme: str, keyset: Keyset | Rejected | None) -> str | None:
        if scheme != ENCRYPTION_SCHEME:
            return f"unknown encryption {scheme!r} (expected {ENCRYPTION_SCHEME!r})"
        if keyset is None:
            return "encrypted, but the tenant has no keyset registered (encryption.keyset)"
        if isinstance(keyset, Rejected):
            return str(keyset)
        kid = key_id(d.body)
        if kid is None:
            return "not a Tink ciphertext (no key id prefix)"
        if kid not in keyset.message_key_ids:
            return (f"unknown key id {kid} (the tenant's keyset holds "
                    f"{', '.join(map(str, keyset.message_key_ids))}): a wrong or rotated-out "
                    "key")
        return None
