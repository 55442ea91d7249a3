"""Encrypted input: tenants' keysets, encrypted files (Tink StreamingAead) and messages
(Tink Aead with a key id)."""

from simbdp.crypto.files import FileDecryptor, encrypt_file
from simbdp.crypto.keyset import Keyset, KeysetError, load_keyset, tenant_keyset

__all__ = ["FileDecryptor", "Keyset", "KeysetError", "encrypt_file", "load_keyset",
           "tenant_keyset"]
