"""PostgreSQL ``LISTEN``/``NOTIFY`` for wake-ups across hub processes (used by :mod:`grocerysync.hub.domain.wake`).

Each hub process keeps one dedicated asyncpg connection, outside tortoise's pool, that both ``LISTEN``s on
:data:`CHANNEL` and sends this process's notifications. Sending through it, never inside a request's
transaction, keeps ``NOTIFY`` out of the hot write transactions (a transaction that notified takes a global
lock at commit). Notifications are tiny (``store:12``, ``agent:7``) and carry no data: a woken poll reads
the database again.

When the connection drops, the bridge logs one line, reconnects with backoff, logs one line when it is back,
and then wakes every local waiter, because notifications sent meanwhile by other processes were missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

from grocerysync.hub.db import tortoise_config

log = logging.getLogger(__name__)

#: The ``LISTEN``/``NOTIFY`` channel every hub process of one database shares.
CHANNEL = "grocerysync_wake"
#: Shown in ``pg_stat_activity.application_name`` so operators can tell this connection from the pool's.
APPLICATION_NAME = "grocerysync-hub wake-ups"
#: Most notifications kept while the connection is down (they are wake-ups: losing some only delays polls).
MAX_PENDING = 10_000
#: Seconds between checks that an idle connection is still alive (a silent network drop raises no error).
KEEPALIVE_SECONDS = 30.0
#: Backoff between reconnection attempts: first, and longest.
RECONNECT_FIRST = 0.5
RECONNECT_MAX = 30.0

# Keys of tortoise's credentials that configure its pool, not the PostgreSQL connection.
_POOL_ONLY = {
    "minsize",
    "maxsize",
    "max_queries",
    "max_inactive_connection_lifetime",
    "connection_class",
    "loop",
    "fetch_inserted",
    "connection_name",
    "schema",
    "application_name",
}


def connect_kwargs(db_url: str) -> dict[str, Any]:
    """``asyncpg.connect`` arguments for the hub's PostgreSQL URL: tortoise's own, without its pool settings.

    The same server settings as the hub's pooled connections (:data:`grocerysync.hub.rls.SYSTEM_SERVER_SETTINGS`),
    the same ``schema`` (as ``search_path``), TLS and credentials, so the listener reaches the same database.
    """
    config = tortoise_config(db_url)
    name = next(iter(config["connections"]))
    credentials: dict[str, Any] = dict(config["connections"][name]["credentials"])
    settings = dict(credentials.pop("server_settings", None) or {})
    if credentials.get("schema"):
        settings["search_path"] = str(credentials["schema"])
    settings["application_name"] = str(credentials.get("application_name") or APPLICATION_NAME)
    kwargs = {k: v for k, v in credentials.items() if k not in _POOL_ONLY}
    if "port" in kwargs:
        kwargs["port"] = int(kwargs["port"])
    kwargs["server_settings"] = settings
    return kwargs


def where(kwargs: dict[str, Any]) -> str:
    """The database a connection goes to, for log lines (no password)."""
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 5432)}/{kwargs.get('database', '')}"


class PgBridge:
    """One process's ``LISTEN`` connection: delivers other processes' payloads and sends this process's own.

    ``on_payload`` is called with each payload another process sent; ``on_resync`` after every (re)connection,
    since notifications sent while this process was not listening are lost.
    """

    def __init__(
        self,
        connect: dict[str, Any],
        on_payload: Callable[[str], None],
        on_resync: Callable[[], None],
        *,
        channel: str = CHANNEL,
    ) -> None:
        self._connect = connect
        self._on_payload = on_payload
        self._on_resync = on_resync
        self.channel = channel
        # Payloads waiting to be sent, in order and without repeats (a dict is an ordered set).
        self._pending: dict[str, None] = {}
        self._wake_sender = asyncio.Event()
        self._lost = asyncio.Event()
        #: Set while the connection is up and listening.
        self.listening = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pid: int | None = None
        self._stopping = False

    def start(self) -> None:
        """Connect and listen in a background task (reconnecting until :meth:`stop`)."""
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="grocerysync wake-ups (LISTEN)")

    async def stop(self) -> None:
        """Close the connection and stop reconnecting."""
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.listening.clear()

    def publish(self, payload: str) -> None:
        """Queue ``payload`` to be sent with ``NOTIFY`` (at once while connected; after reconnecting otherwise)."""
        if payload in self._pending:
            return
        if len(self._pending) >= MAX_PENDING:
            # The oldest wake-up goes: its poll will still answer at its timeout.
            del self._pending[next(iter(self._pending))]
        self._pending[payload] = None
        self._wake_sender.set()

    # --- the connection's life -----------------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = RECONNECT_FIRST
        down_since_logged = False
        while True:
            try:
                conn = await asyncpg.connect(**self._connect, timeout=10)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                if not down_since_logged:
                    log.warning(
                        "cross-process wake-ups: cannot connect to PostgreSQL at %s to LISTEN (%s); retrying with "
                        "backoff. Meanwhile agents' polls on the other hub processes answer at their timeout, not "
                        "at once",
                        where(self._connect),
                        _reason(exc),
                    )
                    down_since_logged = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX)
                continue
            try:
                await self._listen(conn)
                if down_since_logged:
                    log.info("cross-process wake-ups: listening on PostgreSQL at %s again", where(self._connect))
                down_since_logged = False
                delay = RECONNECT_FIRST
                self._on_resync()
                await self._serve(conn)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning(
                    "cross-process wake-ups: the LISTEN connection to PostgreSQL at %s dropped (%s); reconnecting",
                    where(self._connect),
                    _reason(exc),
                )
                down_since_logged = True
            except Exception:
                log.exception("cross-process wake-ups: unexpected error on the LISTEN connection; reconnecting")
                down_since_logged = True
            finally:
                self.listening.clear()
                if self._stopping:
                    # Shutting down: no polite goodbye, which can take up to 5 s after a query the
                    # cancellation interrupted; the connection is not used again.
                    conn.terminate()
                else:
                    await _close(conn)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    async def _listen(self, conn: asyncpg.Connection) -> None:
        self._lost.clear()
        conn.add_termination_listener(lambda _conn: self._lost.set())
        self._pid = conn.get_server_pid()
        await conn.add_listener(self.channel, self._received)
        self.listening.set()

    async def _serve(self, conn: asyncpg.Connection) -> None:
        """Send what is pending; check the idle connection now and then; return (raise) when it is lost."""
        while True:
            if self._pending:
                batch = list(self._pending)
                # One round trip for a burst of wake-ups.
                await conn.execute("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p", self.channel, batch)
                for payload in batch:
                    self._pending.pop(payload, None)
                continue
            self._wake_sender.clear()
            sender = asyncio.ensure_future(self._wake_sender.wait())
            lost = asyncio.ensure_future(self._lost.wait())
            try:
                await asyncio.wait({sender, lost}, timeout=KEEPALIVE_SECONDS, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sender.cancel()
                lost.cancel()
            if self._lost.is_set() or conn.is_closed():
                raise asyncpg.InterfaceError("the server closed the connection")
            if not self._pending:
                await conn.fetchval("SELECT 1", timeout=10)

    def _received(self, _conn: Any, pid: int, _channel: str, payload: str) -> None:
        # This process woke its own waiters when it sent the payload; the echo would only wake them twice.
        if pid == self._pid:
            return
        try:
            self._on_payload(payload)
        except Exception:
            log.exception("cross-process wake-ups: could not handle the notification %r; ignored", payload[:100])


def _reason(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


async def _close(conn: asyncpg.Connection) -> None:
    if conn.is_closed():
        return
    try:
        await asyncio.wait_for(conn.close(), timeout=5)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        conn.terminate()
