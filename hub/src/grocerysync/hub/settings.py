"""Hub settings, read from the environment with the ``GROCERYSYNC_`` prefix."""

from __future__ import annotations

import base64
import binascii
import secrets
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from grocerysync.core.errors import ConfigError
from grocerysync.core.wire import MAX_POLL_WAIT, LogLevel

KEY_BYTES = 32


class Settings(BaseSettings):
    """Everything the hub process is configured with.

    - ``GROCERYSYNC_DATA_DIR``: where the hub keeps its files (the SQLite database, the key file).
    - ``GROCERYSYNC_DATABASE_URL``: ``sqlite:///path`` or ``postgres://user:pass@host:5432/db``;
      the default is ``hub.sqlite3`` in the data directory.
    - ``GROCERYSYNC_SECRET_KEY``: the key that encrypts stored secrets, 32 random bytes in URL-safe base64;
      or ``GROCERYSYNC_SECRET_KEY_FILE`` naming a file that holds it (default: ``secret.key`` in the data
      directory, which ``grocerysync-hub init`` creates when no key is configured).
    - ``GROCERYSYNC_BIND``: ``HOST:PORT`` to serve on.

    The key setting (variable or file) may hold a key ring: several keys separated by newlines, spaces or commas,
    the first sealing new secrets and the others only opening older ones (lines starting with ``#`` are
    comments). ``grocerysync-hub rotate-keys`` re-encrypts everything under the first key.
    """

    model_config = SettingsConfigDict(env_prefix="GROCERYSYNC_", extra="ignore")

    data_dir: Path = Field(default=Path("grocerysync-data"), description="Where the hub keeps its files.")
    database_url: SecretStr | None = Field(
        default=None, description="sqlite:///PATH or postgres://USER:PASSWORD@HOST:PORT/DB (default: SQLite file)."
    )
    secret_key: SecretStr | None = Field(default=None, description="URL-safe base64 of 32 random bytes.")
    secret_key_file: Path | None = Field(default=None, description="A file holding the secret key.")
    bind: str = Field(default="127.0.0.1:8080", description="HOST:PORT to serve on.")
    max_body_bytes: int = Field(default=1_000_000, ge=1024, description="Largest request body accepted.")
    # Browser sessions (grocerysync.hub.sessions).
    session_hours: float = Field(default=12, gt=0, le=24 * 30, description="A session's absolute lifetime.")
    session_idle_minutes: float = Field(
        default=120, gt=0, description="A session unused this long expires (checked to the nearest few minutes)."
    )
    cookie_secure: bool = Field(
        default=True, description="Mark the session cookie Secure; may be off only when serving on loopback."
    )
    login_max_failures: int = Field(
        default=5, ge=1, description="Failed logins of one account before each further try waits (doubling)."
    )
    login_max_failures_per_address: int = Field(
        default=20, ge=1, description="Failed logins from one client address before each further try waits."
    )
    database_pool_size: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="The most PostgreSQL connections one hub process keeps open for queries (plus one that listens "
        "for wake-ups); keep processes x this below the server's max_connections.",
    )
    # PostgreSQL row-level security (grocerysync.hub.rls).
    database_app_role: str | None = Field(
        default=None,
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="The PostgreSQL role the hub serves as; 'init' grants it access under row-level security.",
    )
    # Retention (grocerysync.hub.retention).
    purge_interval_seconds: float = Field(
        default=3600,
        ge=0,
        description="How often a serving hub deletes logs and finished runs older than each retailer's retention "
        "(0: never, run 'grocerysync-hub purge' from a scheduler instead).",
    )
    # The scheduler and lease expiry (grocerysync.hub.domain.scheduler, grocerysync.hub.domain.leases).
    scheduler_interval_seconds: float = Field(
        default=5,
        ge=0,
        description="How often a serving hub queues the runs of due schedules and fails runs whose lease ran out "
        "(0: this process does neither; another hub process on the same PostgreSQL database must).",
    )
    lease_grace_seconds: float | None = Field(
        default=None,
        ge=0,
        description="After a start, no lease is expired for this long, so agents that lost a stopped hub can report "
        "again (default: the longer of run_ack_seconds and run_lease_seconds, plus 60 s).",
    )

    # Agents (grocerysync.hub.domain.agents): their status is derived from when they were last seen.
    agent_online_seconds: float = Field(
        default=90, gt=0, description="An agent seen within this many seconds is online."
    )
    agent_stale_seconds: float = Field(
        default=15 * 60,
        gt=0,
        description="An agent seen within this many seconds (but not online) is stale, and offline after that.",
    )

    # The agent channel (grocerysync.hub.domain.dispatch): long polls, run leases, what agents are told to do.
    agent_poll_max_wait_seconds: float = Field(
        default=50,
        ge=0,
        le=MAX_POLL_WAIT,
        description="The longest the hub holds an agent's poll open (keep it below any proxy's idle timeout).",
    )
    agent_poll_wait_seconds: float = Field(
        default=30, ge=0, le=MAX_POLL_WAIT, description="How long agents are told to ask the hub to hold each poll."
    )
    agent_log_level: LogLevel = Field(default="info", description="The lowest level of log records agents ship.")
    agent_progress_interval_seconds: float = Field(
        default=10, gt=0, description="Seconds between an agent's progress reports on a run (each extends its lease)."
    )
    run_ack_seconds: float = Field(
        default=60, gt=0, description="How long an agent has to acknowledge a run it was handed before it is failed."
    )
    run_lease_seconds: float = Field(
        default=120,
        gt=0,
        description="How long a run stays an agent's after each ack or progress report; keep it several progress "
        "intervals long.",
    )
    run_rejections_kept: int = Field(
        default=10_000, ge=0, description="Rejections stored per run; more are counted in the result, not stored."
    )
    command_redeliver_seconds: float = Field(
        default=120,
        gt=0,
        description="A command delivered to an agent but not answered within this long is delivered again "
        "(its answer may have been lost).",
    )
    heartbeat_flush_seconds: float = Field(
        default=5, gt=0, description="How often agents' heartbeats (last seen, version, health) are written."
    )

    def db_url(self) -> str:
        """The database URL tortoise connects to (a secret: it may hold a password)."""
        if self.database_url is not None:
            url = self.database_url.get_secret_value()
            # "postgresql://" is what most tools print; tortoise names the scheme "postgres".
            return "postgres://" + url.removeprefix("postgresql://") if url.startswith("postgresql://") else url
        return f"sqlite://{(self.data_dir / 'hub.sqlite3').resolve().as_posix()}"

    @property
    def key_path(self) -> Path:
        """Where the secret key is read from when it is not in the environment."""
        return self.secret_key_file or self.data_dir / "secret.key"

    def encryption_key(self) -> bytes:
        """The 32-byte key that seals new secrets (the ring's first); raises ConfigError saying how to provide one."""
        return self.encryption_keys()[0]

    def encryption_keys(self) -> list[bytes]:
        """The key ring, primary first; raises ConfigError saying how to provide or fix it."""
        if self.secret_key is not None:
            text, where = self.secret_key.get_secret_value(), "GROCERYSYNC_SECRET_KEY"
        else:
            path = self.key_path
            try:
                text, where = path.read_text(encoding="ascii"), str(path)
            except OSError as exc:
                raise ConfigError(
                    f"no secret key: cannot read {path} ({exc.strerror}); run 'grocerysync-hub init' to create "
                    "one, or set GROCERYSYNC_SECRET_KEY or GROCERYSYNC_SECRET_KEY_FILE"
                ) from None
        lines = (line.split("#", 1)[0] for line in text.splitlines())
        words = [w for line in lines for w in line.replace(",", " ").split()]
        keys = [_decode_key(w, where, number) for number, w in enumerate(words, 1)]
        if not keys:
            raise ConfigError(
                f"{where} holds no secret key; generate one with 'grocerysync-hub init' (on a fresh data directory) or "
                'python -c "import base64,os;print(base64.urlsafe_b64encode(os.urandom(32)).decode())"'
            )
        return keys


def _decode_key(text: str, where: str, number: int) -> bytes:
    try:
        key = base64.urlsafe_b64decode(text.encode("ascii"))
    except (binascii.Error, UnicodeEncodeError, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        which = "the secret key" if number == 1 else f"key {number} of the key ring"
        raise ConfigError(
            f"{which} in {where} is not {KEY_BYTES} bytes of URL-safe base64; "
            "generate one with 'grocerysync-hub init' (on a fresh data directory) or "
            'python -c "import base64,os;print(base64.urlsafe_b64encode(os.urandom(32)).decode())"'
        )
    return key


def new_key_text() -> str:
    """A fresh secret key, as stored in a key file or GROCERYSYNC_SECRET_KEY."""
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def ensure_key_file(settings: Settings) -> Path | None:
    """Create the key file with a fresh key when no key is configured at all; return its path if created."""
    if settings.secret_key is not None or settings.key_path.exists():
        return None
    path = settings.key_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new_key_text() + "\n", encoding="ascii")
    # Owner-only where the platform supports it; on Windows the file inherits the folder's ACL.
    path.chmod(0o600)
    return path
