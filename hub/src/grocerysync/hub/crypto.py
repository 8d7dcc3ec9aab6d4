"""Secrets at rest: AES-256-GCM under a key ring from the settings (keys are never stored in the database).

A blob is ``v1:<key id>:<base64(nonce || ciphertext)>``. The key id (a hash prefix of the key, not the key)
says which key of the ring sealed it, so a ring can hold several keys at once: the first (primary) key seals
everything new, the others only open what they sealed before. That is what lets ``grocerysync-hub rotate-keys``
re-encrypt the stored secrets while the hub keeps serving (see :mod:`grocerysync.hub.rotation`).

The associated data binds a blob to its tenant, so a blob copied into another retailer's row does not decrypt.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from grocerysync.core.errors import GrocerySyncError

_VERSION = "v1"
_NONCE_BYTES = 12


class SecretsError(GrocerySyncError):
    """A stored secret cannot be decrypted (a key missing from the ring, or a tampered blob)."""


def key_id(key: bytes) -> str:
    """A short public identifier of a key."""
    return hashlib.sha256(b"grocerysync-key-id:" + key).hexdigest()[:12]


def blob_key_id(blob: str) -> str | None:
    """The id of the key that sealed ``blob`` (None for an empty or malformed blob)."""
    version, sep, rest = blob.partition(":")
    if not sep or version != _VERSION:
        return None
    kid, sep, _ = rest.partition(":")
    return kid if sep else None


class SecretBox:
    """Encrypts and decrypts a dict of secret strings under a key ring.

    ``SecretBox(primary, *older)``: ``primary`` seals new secrets; every key opens what it sealed.
    """

    def __init__(self, key: bytes, *older: bytes) -> None:
        self.key_id = key_id(key)
        self._primary = AESGCM(key)
        self._ring: dict[str, AESGCM] = {self.key_id: self._primary}
        for old in older:
            self._ring.setdefault(key_id(old), AESGCM(old))

    @classmethod
    def from_keys(cls, keys: Sequence[bytes]) -> SecretBox:
        """A box for a key ring given primary first."""
        if not keys:
            raise ValueError("a key ring needs at least one key")
        return cls(keys[0], *keys[1:])

    def __repr__(self) -> str:
        return f"SecretBox(key_id={self.key_id!r}, ring={list(self._ring)!r})"

    @property
    def key_ids(self) -> tuple[str, ...]:
        """The ids of every key in the ring, primary first."""
        return tuple(self._ring)

    def encrypt(self, values: dict[str, str], *, retailer_id: int) -> str:
        """The blob for ``values`` under the primary key; an empty dict gives an empty blob."""
        if not values:
            return ""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        plain = json.dumps(values, sort_keys=True).encode("utf-8")
        sealed = self._primary.encrypt(nonce, plain, _aad(retailer_id))
        return f"{_VERSION}:{self.key_id}:{base64.b64encode(nonce + sealed).decode('ascii')}"

    def decrypt(self, blob: str, *, retailer_id: int) -> dict[str, str]:
        """The secrets in ``blob``, opened by the ring key that sealed it; raises SecretsError naming what to check."""
        if not blob:
            return {}
        try:
            version, kid, data = blob.split(":", 2)
            raw = base64.b64decode(data, validate=True)
        except ValueError:
            raise SecretsError("a stored secret is malformed; save the secrets again") from None
        aead = self._ring.get(kid) if version == _VERSION else None
        if aead is None:
            raise SecretsError(
                f"a stored secret was encrypted with key {kid}, which is not in the hub's key ring "
                f"({', '.join(self._ring)}); add that key to GROCERYSYNC_SECRET_KEY / GROCERYSYNC_SECRET_KEY_FILE"
            )
        try:
            plain = aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _aad(retailer_id))
        except InvalidTag:
            raise SecretsError("a stored secret does not decrypt (tampered or moved); save the secrets again") from None
        values: dict[str, str] = json.loads(plain)
        return values

    def needs_rotation(self, blob: str) -> bool:
        """Whether ``blob`` was sealed by a key other than the primary one."""
        return bool(blob) and blob_key_id(blob) != self.key_id

    def reencrypt(self, blob: str, *, retailer_id: int) -> str:
        """``blob`` sealed again under the primary key (unchanged when it already is)."""
        if not self.needs_rotation(blob):
            return blob
        return self.encrypt(self.decrypt(blob, retailer_id=retailer_id), retailer_id=retailer_id)


def _aad(retailer_id: int) -> bytes:
    return f"grocerysync-secrets:{retailer_id}".encode("ascii")
