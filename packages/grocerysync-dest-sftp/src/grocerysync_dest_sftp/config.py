"""The ``sftp`` destination's configuration and secrets models.

Cross-field rules are checked in a validator on the later field, so a refusal names a field the
hub's form can point at (``host_key_fingerprint``, ``private_key``) rather than the whole model.
"""

from __future__ import annotations

import posixpath
import re
from typing import Annotated

import asyncssh
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator

from grocerysync.core.feeds import FeedFormat, check_file_prefix

_FINGERPRINT = re.compile(r"SHA256:([A-Za-z0-9+/]{43})=?(?![A-Za-z0-9+/])")
_HOST = re.compile(r"^[A-Za-z0-9._:\[\]-]+$")

HOST_KEY_HELP = (
    "set exactly one of known_hosts (path to a known_hosts file on the store machine) or host_key_fingerprint "
    "(the server's key fingerprint 'SHA256:...', as `ssh-keygen -lf <host key .pub file>` prints on the server)"
)


def normalize_fingerprint(text: str) -> str:
    """``SHA256:<43 base64 characters>`` from a fingerprint or a whole ``ssh-keygen -lf`` line."""
    match = _FINGERPRINT.search(text.strip())
    if not match:
        if text.strip().upper().startswith("MD5:") or re.fullmatch(
            r"([0-9a-fA-F]{2}:){15}[0-9a-fA-F]{2}", text.strip()
        ):
            raise ValueError(
                "MD5 fingerprints are not accepted: print the SHA256 one with `ssh-keygen -lf <key.pub>` on the server"
            )
        raise ValueError(
            "host_key_fingerprint must look like 'SHA256:' followed by 43 characters, as `ssh-keygen -lf "
            "<host key .pub file>` prints it"
        )
    return f"SHA256:{match.group(1)}"


class SftpConfig(BaseModel):
    """Where the feed goes and how the server is recognised."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    host: Annotated[str, Field(min_length=1, max_length=255)]
    """The SFTP server's host name or IP address."""
    port: Annotated[int, Field(ge=1, le=65535)] = 22
    """The SSH port of the server (22 unless the platform says otherwise)."""
    username: Annotated[str, Field(min_length=1, max_length=128)]
    """The account the platform gave the store for SFTP uploads."""
    remote_dir: Annotated[str, Field(min_length=1, max_length=1024)]
    """The folder on the server the feed files go to, e.g. ``/incoming``."""
    format: FeedFormat = FeedFormat.CSV
    """``csv`` (Instacart-style catalogue columns) or ``jsonl`` (one upsert/delete per line)."""
    file_prefix: Annotated[str, Field(max_length=64)] = ""
    """Put in front of every feed file name, e.g. ``store12_``."""
    known_hosts: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    """Path (on the store machine) to an OpenSSH known_hosts file listing the server's key."""
    host_key_fingerprint: Annotated[str | None, Field(validate_default=True)] = None
    """The server's host key fingerprint, ``SHA256:...`` as ``ssh-keygen -lf`` prints it."""
    connect_timeout: Annotated[float, Field(gt=0, le=300)] = 20.0
    """Seconds to wait for the TCP connection and SSH login."""
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 5
    """Upload attempts when the connection drops, is refused or times out."""
    backoff: Annotated[float, Field(ge=0, le=300)] = 2.0
    """Seconds before the second attempt; doubled for each further one (at most 5 minutes)."""

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        value = value.strip()
        if not _HOST.match(value):
            raise ValueError(f"host {value!r} must be a host name or IP address, without user@ or :port")
        return value

    @field_validator("remote_dir")
    @classmethod
    def _remote_dir(cls, value: str) -> str:
        value = value.strip()
        if "\\" in value or "\x00" in value:
            raise ValueError("remote_dir is a path on the SFTP server: use '/' between folders, like /incoming")
        return posixpath.normpath(value) if value not in ("/", ".") else value

    @field_validator("file_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return check_file_prefix(value)

    @field_validator("host_key_fingerprint")
    @classmethod
    def _one_host_key_source(cls, value: str | None, info: ValidationInfo) -> str | None:
        known_hosts = info.data.get("known_hosts")
        if value is not None and not value.strip():
            value = None
        if (value is None) == (known_hosts is None):
            raise ValueError(HOST_KEY_HELP + ("; both are set" if value is not None else "; neither is set"))
        return None if value is None else normalize_fingerprint(value)

    @property
    def address(self) -> str:
        """``host:port`` for messages."""
        return f"{self.host}:{self.port}"


class SftpSecrets(BaseModel):
    """How the destination logs in: a password, a private key, or both (never printed or logged)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    password: SecretStr | None = None
    """The password of the SFTP account, when the platform uses passwords."""
    private_key_passphrase: SecretStr | None = None
    """The passphrase that decrypts ``private_key``, when it is encrypted."""
    private_key: Annotated[SecretStr | None, Field(validate_default=True)] = None
    """The private key's text (PEM or OpenSSH format, ``-----BEGIN ...``)."""

    @field_validator("private_key")
    @classmethod
    def _usable_credentials(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            value = None
        if value is None:
            if info.data.get("password") is None and "password" in info.data:
                raise ValueError("set password or private_key (or both) so the destination can log in")
            return None
        load_private_key(value, info.data.get("private_key_passphrase"))
        return value

    def client_key(self) -> asyncssh.SSHKey | None:
        """The imported private key, or None when logging in by password only."""
        if self.private_key is None:
            return None
        return load_private_key(self.private_key, self.private_key_passphrase)


def load_private_key(key: SecretStr, passphrase: SecretStr | None) -> asyncssh.SSHKey:
    """Import the key; raise ValueError with a reason that never includes the key or passphrase."""
    text = key.get_secret_value().strip()
    secret = passphrase.get_secret_value() if passphrase is not None else None
    try:
        return asyncssh.import_private_key(text, secret)
    except asyncssh.KeyEncryptionError:
        raise ValueError(
            "private_key_passphrase does not decrypt private_key: enter the key's passphrase again"
        ) from None
    except asyncssh.KeyImportError as exc:
        if "passphrase" in str(exc).lower():
            raise ValueError("private_key is encrypted: set private_key_passphrase") from None
        raise ValueError(
            "private_key is not a private key in PEM or OpenSSH format: paste the whole file, from "
            "'-----BEGIN' to '-----END ... KEY-----' (the private key, not the .pub file)"
        ) from None
