"""Secrets at rest: AES-256-GCM with the key from the settings (never stored in the database).

A blob is ``v1:<key id>:<base64(nonce || ciphertext)>``. The key id (a hash prefix of the key, not the key)
lets a later key rotation tell which rows still use an old key. The associated data binds a blob to its
tenant, so a blob copied into another retailer's row does not decrypt.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from grocerysync.core.errors import GrocerySyncError

_VERSION = "v1"
_NONCE_BYTES = 12


class SecretsError(GrocerySyncError):
    """A stored secret cannot be decrypted (wrong key, or a tampered blob)."""


def key_id(key: bytes) -> str:
    """A short public identifier of a key."""
    return hashlib.sha256(b"grocerysync-key-id:" + key).hexdigest()[:12]


class SecretBox:
    """Encrypts and decrypts a dict of secret strings."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self.key_id = key_id(key)

    def __repr__(self) -> str:
        return f"SecretBox(key_id={self.key_id!r})"

    def encrypt(self, values: dict[str, str], *, retailer_id: int) -> str:
        """The blob for ``values``; an empty dict gives an empty blob."""
        if not values:
            return ""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        plain = json.dumps(values, sort_keys=True).encode("utf-8")
        sealed = self._aead.encrypt(nonce, plain, _aad(retailer_id))
        return f"{_VERSION}:{self.key_id}:{base64.b64encode(nonce + sealed).decode('ascii')}"

    def decrypt(self, blob: str, *, retailer_id: int) -> dict[str, str]:
        """The secrets in ``blob``; raises SecretsError naming what to check."""
        if not blob:
            return {}
        try:
            version, kid, data = blob.split(":", 2)
            raw = base64.b64decode(data, validate=True)
        except ValueError:
            raise SecretsError("a stored secret is malformed; save the secrets again") from None
        if version != _VERSION or kid != self.key_id:
            raise SecretsError(
                f"a stored secret was encrypted with key {kid}, but the hub's key is {self.key_id}; "
                "check GROCERYSYNC_SECRET_KEY / GROCERYSYNC_SECRET_KEY_FILE"
            )
        try:
            plain = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _aad(retailer_id))
        except InvalidTag:
            raise SecretsError("a stored secret does not decrypt (tampered or moved); save the secrets again") from None
        values: dict[str, str] = json.loads(plain)
        return values


def _aad(retailer_id: int) -> bytes:
    return f"grocerysync-secrets:{retailer_id}".encode("ascii")
