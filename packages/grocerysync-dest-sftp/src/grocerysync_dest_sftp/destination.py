"""The ``sftp`` destination: the run's feed is spooled to a local file, then uploaded on commit.

The upload goes to ``.<name>.part`` in ``remote_dir`` and is renamed into place once complete (an
SFTP posix-rename where the server offers it), so whatever picks files up on the server never sees
half a file. A dropped, refused or timed-out connection is retried with exponential backoff; each
attempt starts the upload again from scratch.

The login is started in the background when the first items are spooled, so that the commit finds the SFTP
session open rather than waiting for the server's handshake then (a run with nothing to send never logs in).
Should that session fail in any way, the commit logs in again as if there had been none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import posixpath
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import NamedTuple

import asyncssh

from grocerysync.core.feeds import FeedWriter, empty_feed_message, feed_file_name, human_size
from grocerysync.core.items import Item
from grocerysync.core.records import WriteContext
from grocerysync.core.results import CheckResult, ItemResult
from grocerysync_dest_sftp.config import SftpConfig, SftpSecrets
from grocerysync_dest_sftp.connection import SftpError, connect, describe

# Upload writes: as large as the server says it takes (OpenSSH announces 255 KiB through its
# limits@openssh.com extension), at most 128 KiB, and 64 KiB (which servers take) when it says nothing.
# Whatever the size, about 256 KiB is in flight: asyncssh's default (128 requests of the largest block) holds
# tens of MB on a store PC for no gain on its uplink. Each byte in flight costs about four in memory (the
# file's block, the SFTP and SSH packets, the cipher's output), and the upload is the export's peak: 256 KiB
# in flight, in blocks under glibc's 128 KiB mmap threshold, took 1 MB off the peak of a 25 MB feed's export
# against 512 KiB in 256 KiB blocks, with no difference in the upload's time over loopback.
_BLOCK_SIZE = 64 * 1024
_MAX_BLOCK_SIZE = 128 * 1024
_IN_FLIGHT = 256 * 1024

log = logging.getLogger(__name__)

_MAX_DELAY = 300.0


def _sftp_problem(exc: BaseException, config: SftpConfig, what: str) -> SftpError:
    """An SFTP status error as one line; lost connections stay retryable."""
    if isinstance(exc, asyncssh.SFTPConnectionLost | asyncssh.SFTPNoConnection):
        return SftpError(f"{what}: the connection to {config.address} was lost ({exc.reason})", retryable=True)
    if isinstance(exc, asyncssh.SFTPError):
        return SftpError(f"{what} on {config.address} failed for user {config.username!r}: {exc.reason}")
    return describe(exc, config, SftpSecrets.model_construct(password=None, private_key=None))


async def check(config: SftpConfig, secrets: SftpSecrets) -> CheckResult:
    """Connect, log in, verify the host key, and write and remove a probe file in ``remote_dir``."""
    try:
        conn, fingerprint = await connect(config, secrets)
    except SftpError as exc:
        return CheckResult.failure(str(exc))
    remote_dir = config.remote_dir
    try:
        async with conn, conn.start_sftp_client() as sftp:
            try:
                attrs = await sftp.stat(remote_dir)
            except asyncssh.SFTPNoSuchFile:
                return CheckResult.failure(
                    f"remote_dir {remote_dir} does not exist on {config.address}: create it on the server or "
                    "correct remote_dir"
                )
            if attrs.type != asyncssh.FILEXFER_TYPE_DIRECTORY:
                return CheckResult.failure(f"remote_dir {remote_dir} on {config.address} is not a folder")
            probe = posixpath.join(remote_dir, f".grocerysync-probe-{uuid.uuid4().hex[:12]}")
            try:
                async with sftp.open(probe, "wb") as handle:
                    await handle.write(b"probe\n")
            except asyncssh.SFTPError as exc:
                return CheckResult.failure(
                    f"remote_dir {remote_dir} on {config.address} is not writable for user {config.username!r} "
                    f"({exc.reason}): ask the server's administrator for write access, or use another folder"
                )
            try:
                await sftp.remove(probe)
            except asyncssh.SFTPError as exc:
                return CheckResult.failure(
                    f"user {config.username!r} can create but not delete files in {remote_dir} on {config.address} "
                    f"({exc.reason}): uploads need rename and delete rights there"
                )
    except (OSError, asyncssh.Error) as exc:
        return CheckResult.failure(str(_sftp_problem(exc, config, f"checking {remote_dir}")))
    return CheckResult.success(
        f"logged in to {config.address} as {config.username!r} (host key {fingerprint}); {remote_dir} is writable"
    )


class SftpWriter:
    """One run's feed: spooled locally by ``write``/``delete``, uploaded by ``commit``."""

    def __init__(self, config: SftpConfig, secrets: SftpSecrets, context: WriteContext) -> None:
        self.config = config
        self.secrets = secrets
        self.context = context
        self.name = feed_file_name(config.file_prefix, context.job_name, context.mode, context.run_id, config.format)
        self.remote_path = posixpath.join(config.remote_dir, self.name)
        self.remote_part = posixpath.join(config.remote_dir, f".{self.name}.part")
        self.spool_path = Path(context.work_dir) / f"{self.name}.spool"
        self._feed = FeedWriter(self.spool_path, config.format)
        self._committed: str | None = None
        #: Upload attempts made by the last commit (for the run log and tests).
        self.attempts = 0
        self._early: asyncio.Task[_Session | None] | None = None

    async def write(self, items: Sequence[Item]) -> list[ItemResult]:
        """Spool the items (a local file: memory stays bounded); the first write starts the login."""
        self._check_open()
        if self._early is None:
            self._early = asyncio.ensure_future(self._log_in_early())
        return self._feed.write(items)

    async def delete(self, item_ids: Sequence[str]) -> list[ItemResult]:
        """Spool deletions."""
        self._check_open()
        return self._feed.delete(item_ids)

    def _check_open(self) -> None:
        if self._committed is not None:
            raise SftpError(f"feed {self.remote_path} is already uploaded; a new run writes a new file")

    async def commit(self) -> str:
        """Upload the feed (retrying transient failures); return ``"uploaded <path> (<n> items, <size>)"``."""
        if self._committed is not None:
            return self._committed
        self._feed.close()
        if self._feed.items_written == 0 and self._feed.deletions_written == 0:
            self.discard()
            self._committed = empty_feed_message(self.context.mode)
            return self._committed
        size = self.spool_path.stat().st_size
        self.attempts = 0
        session = await self._early_session()
        if session is not None:
            self.attempts = 1
            try:
                await self._upload(size, retry=False, session=session)
            except SftpError as exc:
                if not exc.retryable:
                    raise SftpError(f"upload of {self.remote_path} to {self.config.address} failed: {exc}") from None
                # The session may have gone stale while the run went on: log in again at once, with every
                # attempt of the configured retries still to come.
                log.info("the upload over the session opened during the run failed (%s); logging in again", exc)
            else:
                self._committed = f"uploaded {self.remote_path} ({self._feed.summary()})"
                return self._committed
        attempts = self.config.max_attempts
        for attempt in range(1, attempts + 1):
            self.attempts += 1
            try:
                await self._upload(size, retry=self.attempts > 1)
                break
            except SftpError as exc:
                if not exc.retryable or attempt == attempts:
                    raise SftpError(
                        f"upload of {self.remote_path} to {self.config.address} failed"
                        f"{f' after {attempt} attempts' if attempt > 1 else ''}: {exc}",
                        retryable=exc.retryable,
                    ) from None
                delay = min(self.config.backoff * 2 ** (attempt - 1), _MAX_DELAY)
                log.warning(
                    "upload attempt %d of %d to %s failed: %s; retrying in %.1f s",
                    attempt,
                    attempts,
                    self.config.address,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
        self._committed = f"uploaded {self.remote_path} ({self._feed.summary()})"
        return self._committed

    async def _upload(self, size: int, *, retry: bool, session: _Session | None = None) -> None:
        """One upload attempt, over ``session`` (opened during the run) or over a login of its own."""
        try:
            if session is None:
                conn, _ = await connect(self.config, self.secrets)
                async with conn, conn.start_sftp_client() as sftp:
                    await self._transfer(sftp, size, retry=retry)
            else:
                async with session.conn, session.sftp:
                    await self._transfer(session.sftp, size, retry=retry)
        except SftpError:
            raise
        except (OSError, asyncssh.Error) as exc:
            raise _sftp_problem(exc, self.config, f"uploading {self.remote_path}") from None
        log.info("uploaded %s to %s (%s)", self.remote_path, self.config.address, human_size(size))

    async def _transfer(self, sftp: asyncssh.SFTPClient, size: int, *, retry: bool) -> None:
        """Upload the spool file to the part file, check its size, rename it into place."""
        if retry and await _has_size(sftp, self.remote_path, size):
            return  # the last attempt renamed the file into place but lost the answer
        await _remove_quietly(sftp, self.remote_part)
        try:
            block_size, max_requests = _transfer_sizes(sftp)
            await sftp.put(str(self.spool_path), self.remote_part, block_size=block_size, max_requests=max_requests)
            uploaded = (await sftp.stat(self.remote_part)).size
            if uploaded != size:
                raise SftpError(
                    f"{self.remote_part} holds {uploaded} bytes after the upload, expected {size}", retryable=True
                )
            try:
                # Atomic replace, even over a file a previous attempt left under the final name.
                await sftp.posix_rename(self.remote_part, self.remote_path)
            except asyncssh.SFTPOpUnsupported:
                await sftp.rename(self.remote_part, self.remote_path)
        except BaseException:
            await _remove_quietly(sftp, self.remote_part)
            raise

    async def _log_in_early(self) -> _Session | None:
        """Connect and open the SFTP session for the commit; None (and a debug line) if that fails: the commit
        then connects itself, and reports what goes wrong."""
        try:
            conn, _ = await connect(self.config, self.secrets)
        except SftpError as exc:
            log.debug("logging in during the run failed: %s", exc)
            return None
        try:
            sftp = await conn.start_sftp_client()
        except (OSError, asyncssh.Error) as exc:
            conn.close()
            log.debug("opening the SFTP session during the run failed: %s", exc)
            return None
        except BaseException:  # cancelled: the run ended first
            conn.close()
            raise
        return _Session(conn, sftp)

    async def _early_session(self) -> _Session | None:
        """The session the first write started, once open; None if it failed or there was none."""
        early, self._early = self._early, None
        if early is None:
            return None
        try:
            return await early
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a defect: the commit's own login says what is wrong
            log.debug("the login during the run failed: %s: %s", type(exc).__name__, exc)
            return None

    async def aclose(self) -> None:
        """Close a session opened during the run that the commit did not use (a failed or cancelled run)."""
        early, self._early = self._early, None
        if early is None:
            return
        early.cancel()  # nothing, if it is done
        await asyncio.wait([early])  # whatever it ended with; a cancellation of this task still comes through
        if early.cancelled() or early.exception() is not None:
            return  # it closed its connection, if it had one
        session = early.result()
        if session is not None:
            session.sftp.exit()
            session.conn.close()

    def discard(self) -> None:
        """Remove the local spool file."""
        try:
            self._feed.discard()
        except OSError as exc:
            log.warning("could not remove spool file %s: %s", self.spool_path, exc.strerror or exc)


class _Session(NamedTuple):
    conn: asyncssh.SSHClientConnection
    sftp: asyncssh.SFTPClient


def _transfer_sizes(sftp: asyncssh.SFTPClient) -> tuple[int, int]:
    """The block size and the number of requests in flight for an upload on ``sftp``."""
    limits = getattr(sftp, "limits", None)  # asyncssh 2.18 and later
    announced = int(limits.max_write_len) if limits is not None else 0
    # asyncssh reports a cautious 16 KiB for a server that announces nothing: 64 KiB, as ever, then.
    block_size = min(max(announced, _BLOCK_SIZE), _MAX_BLOCK_SIZE)
    return block_size, max(1, _IN_FLIGHT // block_size)


async def _has_size(sftp: asyncssh.SFTPClient, path: str, size: int) -> bool:
    try:
        return bool((await sftp.stat(path)).size == size)
    except asyncssh.SFTPNoSuchFile:
        return False


async def _remove_quietly(sftp: asyncssh.SFTPClient, path: str) -> None:
    # Not there, or the connection is gone: either way the next attempt cleans up.
    with contextlib.suppress(asyncssh.SFTPError, OSError):
        await sftp.remove(path)


@asynccontextmanager
async def open_writer(config: SftpConfig, secrets: SftpSecrets, context: WriteContext) -> AsyncIterator[SftpWriter]:
    """Open the run's feed; the local spool file is removed on leaving, committed or not."""
    writer = SftpWriter(config, secrets, context)
    try:
        yield writer
    finally:
        try:
            await writer.aclose()
        finally:
            writer.discard()
