"""Hub settings, read from the environment with the ``GROCERYSYNC_`` prefix."""

from __future__ import annotations

import base64
import binascii
import secrets
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from grocerysync.core.errors import ConfigError

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
        """The 32-byte key for stored secrets; raises ConfigError saying how to provide one."""
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
        try:
            key = base64.urlsafe_b64decode(text.strip().encode("ascii"))
        except (binascii.Error, UnicodeEncodeError, ValueError):
            key = b""
        if len(key) != KEY_BYTES:
            raise ConfigError(
                f"the secret key in {where} is not {KEY_BYTES} bytes of URL-safe base64; "
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
