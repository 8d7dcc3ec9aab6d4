"""The agent's side of the agent channel: one HTTP session to the hub, and how failures are classified.

Every call is a ``POST`` of a JSON body to ``<hub>/agent/v1/<path>`` with ``Authorization: Bearer <credential>``
(never logged). :meth:`HubClient.post` sorts each outcome into one of three:

- an :class:`Answer` (2xx, or a 4xx the caller decides about: 404/409 "not yours any more", 413, 422);
- :class:`HubUnavailable`, worth retrying later: no connection, a timeout, TLS failures, 5xx, 408, 425, 429;
- :class:`Revoked` for 401: the hub does not accept this agent's credential, so nothing will work until the
  agent is enrolled again.

:class:`Connectivity` turns the stream of successes and failures into one warning when the hub becomes
unreachable and one line when it is back, instead of a line per attempt.
"""

from __future__ import annotations

import logging
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from grocerysync.agent.credentials import FILE_NAME, AgentCredentials
from grocerysync.agent.enroll import EnrollError, normalize_hub_url, tls_context
from grocerysync.core.errors import GrocerySyncError
from grocerysync.core.wire import AGENT_API_PREFIX

log = logging.getLogger(__name__)

#: Statuses that say "not now" rather than "never": retried with backoff.
RETRY_STATUSES = frozenset({408, 425, 429})
#: The longest ``Retry-After`` honoured, in seconds.
MAX_RETRY_AFTER = 300.0


class HubConfigError(GrocerySyncError):
    """The stored enrollment names a hub the agent must not or cannot talk to (bad URL, unusable CA file)."""


class HubUnavailable(GrocerySyncError):
    """The hub could not be reached or asked to come back later; ``retry_after`` is its hint, if any."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Revoked(GrocerySyncError):
    """401: the hub does not accept this agent's credential (revoked, or enrolled with another hub)."""

    def __init__(self, hub_url: str, hub_message: str) -> None:
        self.hub_url = hub_url
        self.hub_message = hub_message
        super().__init__(
            f"the hub at {hub_url} refused this agent's credential (HTTP 401: {hub_message or 'no explanation'}); "
            "the agent was revoked or its enrollment is unknown to this hub. Ask your technician for a new "
            f"enrollment token and enroll again: grocerysync-agent enroll --hub {hub_url} --token TOKEN --force"
            + (" --allow-http" if hub_url.startswith("http://") else "")
        )


@dataclass(frozen=True, slots=True)
class Answer:
    """A response the caller decides about: its status, its JSON body (None if not JSON) and the hub's message."""

    status: int
    body: Any
    message: str

    @property
    def ok(self) -> bool:
        """A 2xx answer."""
        return 200 <= self.status < 300


class Backoff:
    """Exponential backoff with jitter: about ``first``, 2x, 4x ... seconds, capped at ``cap``.

    Each delay is drawn from [delay/2, delay] ("equal jitter"), so a fleet of agents that lost the hub at the
    same moment does not come back in lockstep.
    """

    def __init__(self, first: float = 1.0, cap: float = 60.0, *, rng: Callable[[], float] = random.random) -> None:
        self.first = first
        self.cap = cap
        self._rng = rng
        self._attempts = 0

    def next(self, hint: float | None = None) -> float:
        """The next delay; ``hint`` (a ``Retry-After``) is honoured when it is longer."""
        delay = min(self.cap, self.first * (2.0**self._attempts))
        self._attempts += 1
        jittered = delay / 2 + self._rng() * delay / 2
        return max(jittered, min(hint or 0.0, MAX_RETRY_AFTER))

    def reset(self) -> None:
        """Back to the first delay (after a success)."""
        self._attempts = 0


class Connectivity:
    """Whether the hub is reachable, logging only the transitions."""

    def __init__(self, hub_url: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.hub_url = hub_url
        self.reachable = True
        self.problem = ""
        self._since = 0.0
        self._clock = clock

    def failed(self, reason: str) -> None:
        """A call failed for a reason worth retrying; warn if this is the first failure since it was reachable."""
        if self.reachable:
            self.reachable = False
            self._since = self._clock()
            log.warning(
                "cannot reach the hub at %s (%s); retrying with backoff (up to a minute apart), and keeping "
                "results and logs in the spool until it is back",
                self.hub_url,
                reason,
            )
        self.problem = reason

    def succeeded(self) -> None:
        """A call got an answer; say so once if the hub had been unreachable."""
        if not self.reachable:
            self.reachable = True
            log.info("the hub at %s is reachable again (after %.0f s)", self.hub_url, self._clock() - self._since)
        self.problem = ""


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare from a hub, and the backoff is a fine substitute


class HubClient:
    """One aiohttp session to the hub for the agent's lifetime (call :meth:`close`)."""

    def __init__(self, creds: AgentCredentials, state_dir: Path) -> None:
        self.connectivity = Connectivity("")
        self._session: aiohttp.ClientSession | None = None
        self._old: list[aiohttp.ClientSession] = []
        self.configure(creds, state_dir)

    def configure(self, creds: AgentCredentials, state_dir: Path) -> None:
        """Use (new) enrollment details; HubConfigError for a hub URL or CA file that cannot be used."""
        where = state_dir / FILE_NAME
        try:
            # The same rules as enroll: https, or plain http to this machine only (enroll allowed it).
            base = normalize_hub_url(creds.hub_url, allow_http=True)
        except EnrollError as exc:
            raise HubConfigError(
                f"the hub address in {where} cannot be used ({exc}); enroll again with --force"
            ) from None
        context: ssl.SSLContext | None = None
        if base.startswith("https://"):
            try:
                context = tls_context(Path(creds.ca_file) if creds.ca_file else None)
            except EnrollError:
                raise HubConfigError(
                    f"the hub's CA certificate {creds.ca_file} named in {where} is missing or not a PEM CA "
                    "certificate; put it back, or enroll again with --force and --ca-file"
                ) from None
        self.base = base
        self.agent_id = creds.agent_id
        self._ssl: ssl.SSLContext | bool = context if context is not None else True
        self._auth = {"Authorization": f"Bearer {creds.credential.get_secret_value()}"}
        self.connectivity.hub_url = base
        if self._session is not None:
            # Requests in flight finish on the old session; it is closed with the client.
            self._old.append(self._session)
            self._session = None

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers={"Content-Type": "application/json", "User-Agent": "grocerysync-agent"},
                # No cookies: the agent authenticates with its credential on every call.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def close(self) -> None:
        """Close the session(s)."""
        for session in [*self._old, self._session]:
            if session is not None and not session.closed:
                await session.close()
        self._old.clear()
        self._session = None

    async def post(self, path: str, body: Any, *, time_limit: float) -> Answer:
        """POST ``body`` (JSON data, or bytes already encoded) to ``/agent/v1/<path>``.

        Returns the answer for 2xx and the 4xx the caller handles; raises HubUnavailable (retry later) or
        Revoked (401). Updates :attr:`connectivity`.
        """
        url = f"{self.base}{AGENT_API_PREFIX}/{path.lstrip('/')}"
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        session = self._ensure_session()
        try:
            async with session.post(
                url, data=data, headers=self._auth, ssl=self._ssl, timeout=aiohttp.ClientTimeout(total=time_limit)
            ) as response:
                status = response.status
                raw = await response.read()
                retry_after = _retry_after(response.headers.get("Retry-After"))
        except aiohttp.ClientConnectorCertificateError as exc:
            raise self._unavailable(
                f"its certificate is not trusted: {exc.certificate_error}; if the hub's CA changed, enroll again "
                "with --ca-file"
            ) from None
        except aiohttp.ClientSSLError as exc:
            raise self._unavailable(f"TLS failed: {exc}") from None
        except aiohttp.ClientConnectorError as exc:
            raise self._unavailable(f"cannot connect: {exc.os_error.strerror or exc.os_error}") from None
        except TimeoutError:
            raise self._unavailable(f"no answer within {time_limit:.0f} s") from None
        except aiohttp.ClientError as exc:
            raise self._unavailable(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None
        try:
            parsed: Any = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            parsed = None
        message = parsed.get("error") if isinstance(parsed, dict) else None
        if not isinstance(message, str):
            message = raw[:200].decode("utf-8", "replace").strip()
        if status == 401:
            self.connectivity.succeeded()
            raise Revoked(self.base, message)
        if status >= 500 or status in RETRY_STATUSES:
            raise self._unavailable(f"HTTP {status}: {message or 'no explanation'}", retry_after=retry_after)
        self.connectivity.succeeded()
        return Answer(status, parsed, message)

    def _unavailable(self, reason: str, *, retry_after: float | None = None) -> HubUnavailable:
        self.connectivity.failed(reason)
        return HubUnavailable(f"the hub at {self.base} is not available: {reason}", retry_after=retry_after)
