"""Where the agent keeps its state: one directory per job with its delta store and its runs.

Layout under the state directory::

    jobs/<job-slug>/state.sqlite      content hashes of what the destination has (the delta store)
    jobs/<job-slug>/runs/<run-id>/    one directory per run: rejections, dry-run preview, temp files
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

#: Environment variable that overrides the platform default state directory.
HOME_ENV = "GROCERYSYNC_AGENT_HOME"
#: How many run directories are kept per job; older ones are pruned when a run starts.
KEEP_RUNS = 20

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def default_state_dir() -> Path:
    """The state directory: ``GROCERYSYNC_AGENT_HOME``, else the platform's usual place for service data."""
    env = os.environ.get(HOME_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = os.environ.get("PROGRAMDATA") or r"C:\ProgramData"
        return Path(base) / "GrocerySync" / "agent"
    # geteuid does not exist on Windows; the getattr keeps this module importable there.
    geteuid = getattr(os, "geteuid", None)
    if geteuid is not None and geteuid() == 0:
        return Path("/var/lib/grocerysync-agent")
    xdg = os.environ.get("XDG_STATE_HOME", "").strip()
    base_dir = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base_dir / "grocerysync-agent"


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) readable by its owner only; return it."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if os.name == "posix":
        # mkdir's mode is filtered by the umask and ignored for existing directories.
        path.chmod(0o700)
    return path


def job_slug(job_name: str) -> str:
    """A file-system-safe directory name for a job; a short hash keeps distinct names distinct."""
    digest = hashlib.blake2b(job_name.encode("utf-8"), digest_size=4).hexdigest()
    readable = _UNSAFE.sub("_", job_name).strip("._")[:60] or "job"
    return f"{readable}-{digest}"


def new_run_id() -> str:
    """A sortable, unique run id such as ``20250102T030405Z-1a2b3c``."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def job_dir(state_dir: Path, job_name: str) -> Path:
    """The directory of one job's state and runs (created owner-only)."""
    return ensure_private_dir(state_dir / "jobs" / job_slug(job_name))


def run_dir(state_dir: Path, job_name: str, run_id: str) -> Path:
    """A fresh directory for one run, after pruning the job's oldest runs."""
    runs = job_dir(state_dir, job_name) / "runs"
    ensure_private_dir(runs)
    prune_runs(runs, keep=KEEP_RUNS - 1)
    safe_id = _UNSAFE.sub("_", run_id).strip("._") or new_run_id()
    return ensure_private_dir(runs / safe_id)


def prune_runs(runs: Path, *, keep: int) -> None:
    """Delete all but the ``keep`` newest run directories."""
    existing = sorted((p for p in runs.iterdir() if p.is_dir()), key=lambda p: (p.stat().st_mtime, p.name))
    for old in existing[: max(0, len(existing) - keep)]:
        shutil.rmtree(old, ignore_errors=True)
