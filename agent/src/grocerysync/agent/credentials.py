"""The agent's enrollment: its hub, its id and its credential, kept in ``<state dir>/agent.json``.

The file holds a secret, so it is written owner-only: mode 0600 on POSIX; on Windows the file inherits the
ACL of the state directory, which :func:`grocerysync.agent.paths.ensure_private_dir` makes private. It is
written to a temporary file first and renamed, so a crash never leaves half a credential behind.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from pydantic import BaseModel, SecretStr, ValidationError

from grocerysync.agent import paths
from grocerysync.core.config import field_errors
from grocerysync.core.errors import GrocerySyncError

FILE_NAME = "agent.json"


class CredentialsError(GrocerySyncError):
    """The enrollment file is missing, unreadable or malformed, or would be overwritten."""


class AgentCredentials(BaseModel):
    """What the agent needs to talk to its hub."""

    hub_url: str
    agent_id: int
    credential: SecretStr
    ca_file: str | None = None
    retailer_id: int | None = None
    store_id: int | None = None
    store_name: str | None = None

    def to_file_json(self) -> str:
        """The file's content, with the credential revealed."""
        body = self.model_dump(mode="json")
        body["credential"] = self.credential.get_secret_value()
        return json.dumps(body, indent=2) + "\n"


def credentials_path(state_dir: Path) -> Path:
    """Where the enrollment of the agent with this state directory is kept."""
    return state_dir / FILE_NAME


def load_credentials(state_dir: Path) -> AgentCredentials:
    """The stored enrollment; CredentialsError (saying to run ``enroll``) when there is none or it is broken."""
    path = credentials_path(state_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CredentialsError(
            f"this agent is not enrolled ({path} does not exist); run 'grocerysync-agent enroll --hub URL --token T'"
        ) from None
    except OSError as exc:
        raise CredentialsError(f"cannot read {path}: {exc.strerror}; check its owner and permissions") from None
    try:
        return AgentCredentials.model_validate_json(text)
    except ValidationError as exc:
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in field_errors(exc))
        raise CredentialsError(
            f"{path} is damaged ({detail}); enroll again with a new token: 'grocerysync-agent enroll ... --force'"
        ) from None


def check_not_enrolled(state_dir: Path) -> None:
    """CredentialsError if an enrollment is already stored (so ``enroll`` without ``--force`` spends no token)."""
    path = credentials_path(state_dir)
    if path.exists():
        raise CredentialsError(
            f"this agent is already enrolled ({path} exists); to replace that enrollment, run enroll again with --force"
        )


def save_credentials(state_dir: Path, creds: AgentCredentials, *, force: bool = False) -> Path:
    """Write the enrollment owner-only into the (private) state directory; return the file's path.

    Without ``force`` an existing enrollment is never replaced.
    """
    paths.ensure_private_dir(state_dir)
    target = credentials_path(state_dir)
    if not force:
        check_not_enrolled(state_dir)
    temp = state_dir / f".{FILE_NAME}.{secrets.token_hex(4)}.tmp"
    # O_EXCL with mode 0600: the secret is never readable by others, not even for a moment. On Windows the
    # mode only controls the read-only flag, and the directory's ACL does the protecting.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(creds.to_file_json().encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        if os.name == "posix":
            temp.chmod(0o600)  # the umask may have narrowed it further; make it exactly owner read/write
        temp.replace(target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return target
