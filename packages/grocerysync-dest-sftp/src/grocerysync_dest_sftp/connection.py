"""Opening an SSH connection the way a technician expects: the host key checked against what was
configured (a known_hosts file or a pinned fingerprint), only the configured credentials tried, and
every failure turned into one line that says what to do.

Nothing from the user's own SSH set-up is used (no ``~/.ssh/config``, default keys, agent or GSSAPI):
a store machine's service account must behave the same whoever installed it.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import asyncssh

from grocerysync.core.errors import DestinationError
from grocerysync_dest_sftp.config import SftpConfig, SftpSecrets


class SftpError(DestinationError):
    """A failure talking to the SFTP server; ``retryable`` when trying again later may work."""


class _HostKeyClient(asyncssh.SSHClient):
    """Remembers the host key the server presented, and accepts it when it matches the pinned fingerprint.

    asyncssh calls ``validate_host_public_key`` only for keys that are not already trusted by the
    known_hosts data, so in known_hosts mode this only records the key for the error message.
    """

    def __init__(self, pinned: str | None) -> None:
        self.pinned = pinned
        self.seen: asyncssh.SSHKey | None = None

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        self.seen = key
        return self.pinned is not None and key.get_fingerprint("sha256") == self.pinned


# AES-GCM first, then asyncssh's own list ("^" prepends to it), so a server without AES-GCM still
# negotiates one of those. asyncssh's first choice, chacha20-poly1305, derives each packet's key and
# tag in Python; AES-GCM is one OpenSSL call per packet and cuts the upload's time about in half.
# Both are sound ciphers.
_ENCRYPTION_ALGS = "^aes256-gcm@openssh.com,aes128-gcm@openssh.com"


def _known_hosts(config: SftpConfig) -> asyncssh.SSHKnownHosts:
    if config.known_hosts is None:
        # An empty (but given) list: nothing is trusted up front, so the pinned check decides.
        return asyncssh.import_known_hosts("")
    path = Path(config.known_hosts).expanduser()
    try:
        return asyncssh.read_known_hosts(str(path))
    except FileNotFoundError:
        raise SftpError(
            f"known_hosts file {path} does not exist on this machine: create it (see the destination's README) "
            "or pin the server's key with host_key_fingerprint instead"
        ) from None
    except (OSError, ValueError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SftpError(f"cannot read known_hosts file {path}: {detail}; fix or replace the file") from None


def _methods(secrets: SftpSecrets) -> str:
    tried = []
    if secrets.private_key is not None:
        tried.append("public key")
    if secrets.password is not None:
        tried.append("password")
    return " and ".join(tried)


def _host_key_message(config: SftpConfig, seen: asyncssh.SSHKey | None) -> str:
    where = config.address
    if seen is None:
        return f"the host key of {where} could not be verified; check known_hosts / host_key_fingerprint"
    shown = f"{seen.get_algorithm()} key {seen.get_fingerprint('sha256')}"
    pin = f"set host_key_fingerprint to {seen.get_fingerprint('sha256')}"
    if config.host_key_fingerprint is not None:
        return (
            f"host key mismatch for {where}: the server presents {shown}, not the pinned "
            f"{config.host_key_fingerprint}. If the server's key was changed on purpose (or you pinned another of "
            f"its keys), confirm the new fingerprint with the server's administrator and {pin}; otherwise do not "
            "connect: someone may be intercepting the connection"
        )
    trusted, *_ = asyncssh.match_known_hosts(_known_hosts(config), config.host, "", config.port)
    if trusted:
        return (
            f"host key mismatch for {where}: the server presents {shown}, which differs from the key for it in "
            f"{config.known_hosts}. If the server's key was changed on purpose, confirm the new fingerprint with the "
            f"server's administrator and update the file (or {pin}); otherwise do not connect: someone may be "
            "intercepting the connection"
        )
    entry = f"[{config.host}]:{config.port}" if config.port != 22 else config.host
    return (
        f"host key of {where} is unknown: {config.known_hosts} has no entry for {entry}. The server presents "
        f"{shown}; confirm it with the server's administrator, then add the server's line to the file (for example "
        f"`ssh-keyscan -p {config.port} {config.host} >> {config.known_hosts}`) or {pin}"
    )


def describe(exc: BaseException, config: SftpConfig, secrets: SftpSecrets) -> SftpError:
    """Turn a connection or SFTP exception into one actionable line (never including a secret)."""
    where = config.address
    if isinstance(exc, SftpError):
        return exc
    if isinstance(exc, socket.gaierror):
        return SftpError(
            f"cannot resolve host name {config.host!r}: check the destination's host and this machine's DNS / "
            "internet connection"
        )
    if isinstance(exc, ConnectionRefusedError):
        return SftpError(
            f"connection to {where} refused: no SSH server is listening there; check host and port, and that "
            "the SFTP server is running",
            retryable=True,
        )
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return SftpError(
            f"no answer from {where} within {config.connect_timeout:g} s: check host and port, and that a "
            "firewall lets this machine reach the server",
            retryable=True,
        )
    if isinstance(exc, asyncssh.PermissionDenied):
        return SftpError(
            f"authentication refused for user {config.username!r} on {where} (tried: {_methods(secrets)}): check "
            "the username, and that the server accepts this password or has this key's public half in the user's "
            "authorized_keys"
        )
    if isinstance(exc, asyncssh.ConnectionLost | ConnectionResetError | BrokenPipeError):
        return SftpError(f"connection to {where} was lost: {exc}", retryable=True)
    if isinstance(exc, asyncssh.DisconnectError):
        return SftpError(
            f"the SSH server at {where} closed the connection: {exc.reason or exc}",
            retryable=exc.code in (asyncssh.DISC_CONNECTION_LOST, asyncssh.DISC_BY_APPLICATION),
        )
    if isinstance(exc, OSError):
        return SftpError(f"cannot connect to {where}: {exc.strerror or exc}", retryable=True)
    return SftpError(f"SSH connection to {where} failed: {type(exc).__name__}: {exc}")


async def connect(config: SftpConfig, secrets: SftpSecrets) -> tuple[asyncssh.SSHClientConnection, str]:
    """Connect and log in; return the connection and the server's host key fingerprint.

    Raises :class:`SftpError` with one line that says what failed and what to do.
    """
    known_hosts = _known_hosts(config)
    client = _HostKeyClient(config.host_key_fingerprint)
    key = secrets.client_key()
    try:
        conn, _ = await asyncssh.create_connection(
            lambda: client,
            config.host,
            config.port,
            username=config.username,
            known_hosts=known_hosts,
            client_keys=[key] if key is not None else None,
            password=secrets.password.get_secret_value() if secrets.password is not None else None,
            agent_path=None,
            config=None,
            gss_host=None,
            connect_timeout=config.connect_timeout,
            login_timeout=config.connect_timeout,
            keepalive_interval=30,
            encryption_algs=_ENCRYPTION_ALGS,
        )
    except asyncssh.HostKeyNotVerifiable:
        raise SftpError(_host_key_message(config, client.seen)) from None
    except Exception as exc:  # every failure becomes one line; the type decides retryable
        raise describe(exc, config, secrets) from None
    server_key = conn.get_server_host_key()
    return conn, server_key.get_fingerprint("sha256") if server_key is not None else "unknown"
