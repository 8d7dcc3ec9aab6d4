"""The sftp destination's configuration and secrets: refusals name the field, secrets never print."""

from __future__ import annotations

import pytest
from grocerysync_dest_sftp import SftpConfig, SftpSecrets
from grocerysync_dest_sftp.config import normalize_fingerprint

from grocerysync.core.config import parse_config
from grocerysync.core.errors import ConfigError

BASE = {"host": "sftp.example.com", "username": "store12", "remote_dir": "/incoming"}
FP = "SHA256:" + "Ab1+" * 10 + "xyz"


@pytest.mark.parametrize(
    ("extra", "word"),
    [({}, "neither"), ({"known_hosts": "/etc/kh", "host_key_fingerprint": FP}, "both")],
)
def test_exactly_one_host_key_source(extra, word):
    with pytest.raises(ConfigError) as err:
        parse_config(SftpConfig, {**BASE, **extra}, where="config")
    assert err.value.errors[0]["field"] == "config.host_key_fingerprint"
    assert word in err.value.errors[0]["message"]
    assert "known_hosts" in err.value.errors[0]["message"]


def test_fingerprint_from_an_ssh_keygen_line():
    cfg = SftpConfig(**BASE, host_key_fingerprint=f"256 {FP} root@sftp (ED25519)")
    assert cfg.host_key_fingerprint == FP
    assert cfg.port == 22


@pytest.mark.parametrize("bad", ["SHA256:short", "MD5:12:34", "12:34:56:78:9a:bc:de:f0:12:34:56:78:9a:bc:de:f0"])
def test_bad_fingerprints_are_refused(bad):
    with pytest.raises(ValueError, match="SHA256"):
        normalize_fingerprint(bad)


def test_host_with_user_or_port_is_refused():
    with pytest.raises(ConfigError, match="without user@ or :port") as err:
        parse_config(SftpConfig, {**BASE, "host": "me@sftp.example.com", "host_key_fingerprint": FP}, where="config")
    assert [e["field"] for e in err.value.errors] == ["config.host"]


def test_secrets_need_a_credential_and_never_print():
    with pytest.raises(ConfigError) as err:
        parse_config(SftpSecrets, {}, where="secrets")
    assert err.value.errors[0]["field"] == "secrets.private_key"
    secrets = SftpSecrets(password="hunter2-very-secret")
    assert "hunter2" not in repr(secrets)
    assert "hunter2" not in str(secrets.model_dump())


def test_garbage_key_is_refused_without_echo():
    with pytest.raises(ConfigError) as err:
        parse_config(SftpSecrets, {"private_key": "ssh-ed25519 AAAApublic-half"}, where="secrets")
    assert err.value.errors[0]["field"] == "secrets.private_key"
    assert "AAAApublic-half" not in str(err.value)
