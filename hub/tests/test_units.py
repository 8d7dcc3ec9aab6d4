"""Settings, secrets encryption, password and token hashing."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from grocerysync.core.errors import ConfigError
from grocerysync.hub.crypto import SecretBox, SecretsError
from grocerysync.hub.security import hash_password, new_token, token_hash, verify_password
from grocerysync.hub.settings import Settings, ensure_key_file

KEY = base64.urlsafe_b64encode(b"a" * 32).decode()


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GROCERYSYNC_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("GROCERYSYNC_SECRET_KEY", KEY)
    settings = Settings()
    assert settings.db_url() == f"sqlite://{(tmp_path / 'hub.sqlite3').resolve().as_posix()}"
    assert settings.encryption_key() == b"a" * 32
    monkeypatch.setenv("GROCERYSYNC_DATABASE_URL", "postgresql://hub:s3cr3t-pw@db:5432/hub")
    settings = Settings()
    assert settings.db_url() == "postgres://hub:s3cr3t-pw@db:5432/hub"
    # Neither the key nor the database password shows in the settings' repr.
    assert "s3cr3t-pw" not in repr(settings)
    assert KEY not in repr(settings)


def test_key_file_is_created_once_and_read(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    with pytest.raises(ConfigError, match="grocerysync-hub init"):
        settings.encryption_key()
    created = ensure_key_file(settings)
    assert created == tmp_path / "secret.key"
    key = settings.encryption_key()
    assert len(key) == 32
    assert ensure_key_file(settings) is None
    assert settings.encryption_key() == key
    other = tmp_path / "other.key"
    other.write_text("too short")
    with pytest.raises(ConfigError, match="not 32 bytes"):
        Settings(data_dir=tmp_path, secret_key_file=other).encryption_key()


def test_secret_box_round_trip_and_binding() -> None:
    box = SecretBox(b"a" * 32)
    blob = box.encrypt({"password": "hunter2-long"}, retailer_id=1)
    assert "hunter2" not in blob
    assert box.decrypt(blob, retailer_id=1) == {"password": "hunter2-long"}
    assert box.encrypt({}, retailer_id=1) == ""
    with pytest.raises(SecretsError, match="does not decrypt"):
        box.decrypt(blob, retailer_id=2)
    with pytest.raises(SecretsError, match=box.key_id):
        SecretBox(b"b" * 32).decrypt(blob, retailer_id=1)
    assert "a" * 32 not in repr(box)


def test_passwords_and_tokens() -> None:
    digest = hash_password("correct horse battery")
    assert digest.startswith("$argon2id$")
    assert verify_password(digest, "correct horse battery")
    assert not verify_password(digest, "wrong")
    assert not verify_password("", "anything")
    token, prefix, stored = new_token()
    assert token.startswith(prefix)
    assert token.startswith("gsh_")
    assert stored == token_hash(token)
    assert token not in stored
