"""Passwords (argon2) and API tokens (random, stored as SHA-256)."""

from __future__ import annotations

import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()

TOKEN_PREFIX = "gsh_"  # noqa: S105 (a marker, not a secret)
#: How much of a token is stored in clear so people can tell their tokens apart.
SHOWN_CHARS = 12


def hash_password(password: str) -> str:
    """An argon2id hash of ``password``."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Whether ``password`` matches; never raises for a wrong password or an empty/unknown hash."""
    if not password_hash:
        return False
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def new_token() -> tuple[str, str, str]:
    """A fresh API token: ``(token, shown prefix, hash to store)``. The token itself is shown once."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, token[:SHOWN_CHARS], token_hash(token)


def token_hash(token: str) -> str:
    """What the database stores for a token. Tokens are long and random, so a plain SHA-256 suffices."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
