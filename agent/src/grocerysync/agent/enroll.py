"""``grocerysync-agent enroll``: trade a one-time enrollment token for this agent's own credential.

The hub is reached over HTTPS, verified with the system's CAs or a pinned CA file (``--ca-file``). Plain
``http://`` is refused unless explicitly allowed, and even then only for a loopback host (development).
"""

from __future__ import annotations

import asyncio
import ipaddress
import platform
import socket
import ssl
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from pydantic import SecretStr, ValidationError

from grocerysync.agent.credentials import AgentCredentials, check_not_enrolled, save_credentials
from grocerysync.core.errors import GrocerySyncError
from grocerysync.core.manager import PluginManager
from grocerysync.core.wire import AGENT_API_PREFIX, EnrollRequest, EnrollResponse, PluginVersion

#: How long to wait for the hub before giving up.
TIMEOUT_SECONDS = 30.0


class EnrollError(GrocerySyncError):
    """Enrollment did not happen; the message says why and what to do."""


@dataclass(frozen=True)
class Enrolled:
    """The outcome of a successful enrollment."""

    credentials: AgentCredentials
    path: Path


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() in {"localhost", "localhost."}:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normalize_hub_url(url: str, *, allow_http: bool) -> str:
    """The hub's base URL without a trailing slash; EnrollError for a URL the agent must not use."""
    text = url.strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in {"https", "http"} or not parts.hostname:
        raise EnrollError(f"--hub {url!r} is not a hub address; give it as https://HOST[:PORT]")
    if parts.query or parts.fragment:
        raise EnrollError(f"--hub {url!r} must not have a query or fragment; give it as https://HOST[:PORT]")
    if parts.scheme == "http":
        if not allow_http:
            raise EnrollError(
                f"--hub {url!r} is plain HTTP, which would send the token unencrypted; use https:// "
                "(or, for development on this machine only, --allow-http)"
            )
        if not is_loopback(parts.hostname):
            raise EnrollError(
                f"--allow-http is only for a hub on this machine (localhost, 127.0.0.1, ::1), not {parts.hostname}; "
                "use https://"
            )
    return text


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """Verification with the system's CAs, or with only the CA certificate(s) in ``ca_file``."""
    if ca_file is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except FileNotFoundError:
        raise EnrollError(f"--ca-file {ca_file} does not exist; give the hub's CA certificate (PEM)") from None
    except (ssl.SSLError, OSError) as exc:
        raise EnrollError(f"--ca-file {ca_file} is not a usable PEM CA certificate: {exc}") from None


def describe_machine(plugins: PluginManager | None = None) -> dict[str, Any]:
    """Host name, OS, agent version and installed plugins, as sent with the enrollment."""
    try:
        version = metadata.version("grocerysync-agent")
    except metadata.PackageNotFoundError:
        version = ""
    pm = plugins if plugins is not None else PluginManager()
    seen: dict[tuple[str, str], PluginVersion] = {}
    for info in pm.infos():
        seen.setdefault(
            (info.name, info.distribution),
            PluginVersion(name=info.name, distribution=info.distribution or "", version=info.version or ""),
        )
    return {
        "hostname": (socket.gethostname() or "unknown")[:200],
        "os": f"{platform.system()} {platform.release()}".strip()[:200],
        "agent_version": version[:100],
        "plugins": list(seen.values()),
    }


async def request_enrollment(hub_url: str, request: EnrollRequest, context: ssl.SSLContext | None) -> EnrollResponse:
    """POST the enrollment to the hub; EnrollError with one clear line for anything but success."""
    url = hub_url + AGENT_API_PREFIX + "/enroll"
    ssl_arg: ssl.SSLContext | bool = context if context is not None and url.startswith("https://") else True
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(url, json=request.wire(), ssl=ssl_arg) as response,
        ):
            status = response.status
            text = await response.text(errors="replace")
            body: Any = None
            try:
                body = await response.json(content_type=None)
            except ValueError:
                body = None
    except aiohttp.ClientConnectorCertificateError as exc:
        raise EnrollError(
            f"the hub at {hub_url} presented a certificate this machine does not trust ({exc.certificate_error}); "
            "if the hub uses its own CA, pass its CA certificate with --ca-file"
        ) from None
    except aiohttp.ClientSSLError as exc:
        raise EnrollError(f"TLS with the hub at {hub_url} failed ({exc}); check --hub and --ca-file") from None
    except aiohttp.ClientConnectorError as exc:
        raise EnrollError(
            f"cannot reach the hub at {hub_url} ({exc.os_error.strerror or exc.os_error}); "
            "check the address and that the hub is running and reachable from this machine"
        ) from None
    except TimeoutError:
        raise EnrollError(
            f"the hub at {hub_url} did not answer within {TIMEOUT_SECONDS:.0f} s; try again later"
        ) from None
    except aiohttp.ClientError as exc:
        raise EnrollError(f"talking to the hub at {hub_url} failed ({exc}); try again") from None
    message = body.get("error") if isinstance(body, dict) else None
    if status != 201:
        if status == 404:
            raise EnrollError(f"{hub_url} has no enrollment endpoint (404); check that --hub is the hub's address")
        detail = message or text.strip()[:200] or "no explanation"
        raise EnrollError(f"the hub refused the enrollment (HTTP {status}): {detail}")
    try:
        return EnrollResponse.model_validate(body)
    except ValidationError:
        raise EnrollError(
            f"the hub at {hub_url} answered something that is not an enrollment; check that --hub is the hub's address"
        ) from None


def enroll(
    hub: str,
    token: str,
    state_dir: Path,
    *,
    ca_file: Path | None = None,
    allow_http: bool = False,
    force: bool = False,
    plugins: PluginManager | None = None,
) -> Enrolled:
    """Enroll this agent with the hub and store its credential in ``state_dir``; EnrollError/CredentialsError."""
    hub_url = normalize_hub_url(hub, allow_http=allow_http)
    if not token.strip():
        raise EnrollError("--token is empty; give the enrollment token your technician created for this store")
    if not force:
        # Before the hub is asked, so that a refused overwrite does not spend the token.
        check_not_enrolled(state_dir)
    context = tls_context(ca_file) if hub_url.startswith("https://") else None
    ca_text = str(ca_file.resolve()) if ca_file is not None else None
    request = EnrollRequest(token=SecretStr(token.strip()), **describe_machine(plugins))
    answer = asyncio.run(request_enrollment(hub_url, request, context))
    creds = AgentCredentials(
        hub_url=answer.hub_url or hub_url,
        agent_id=answer.agent_id,
        credential=answer.credential,
        ca_file=ca_text,
        retailer_id=answer.retailer_id,
        store_id=answer.store_id,
        store_name=answer.store_name,
    )
    return Enrolled(creds, save_credentials(state_dir, creds, force=force))
