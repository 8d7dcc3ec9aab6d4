"""Helpers for the ``grocerysync-agent run`` tests: an enrolled state directory, the runner in a thread of its
own (the fake hub has another), slow and leaky test plugins, and real CSV -> folder jobs."""

from __future__ import annotations

import asyncio
import csv
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import DestConfig, DestSecrets, RecordingDestination, make_rows
from fakehub import CREDENTIAL, FakeHub
from pydantic import BaseModel, SecretStr

from grocerysync.agent.credentials import AgentCredentials, save_credentials
from grocerysync.agent.runner import AgentRunner, RunnerOptions
from grocerysync.agent.spool import Spool
from grocerysync.core import CheckResult, Destination, PosConnector, RawBatch, RawRecord, ReadRequest, hookimpl
from grocerysync.core.manager import PluginManager

#: A destination secret that must never be written under the state directory or sent back to the hub.
CANARY = "canary-7f3a9c1e-secret"

#: Options that make the runner's waits short enough for tests.
FAST = {"backoff_first": 0.05, "backoff_cap": 0.4, "log_flush_interval": 0.1, "stop_grace": 3.0}


def enroll(state_dir: Path, hub: FakeHub, *, credential: str = CREDENTIAL) -> Path:
    """Store an enrollment with the fake hub, as ``grocerysync-agent enroll`` would."""
    creds = AgentCredentials(hub_url=hub.url, agent_id=1, credential=SecretStr(credential), store_name="Main St")
    return save_credentials(state_dir, creds, force=True)


# Fixtures of the runner tests: a test module imports them (named so that its parameters do not shadow them).


@pytest.fixture(name="hub")
def fake_hub() -> Iterator[FakeHub]:
    """``hub``: a fake hub listening on loopback."""
    with FakeHub() as hub:
        yield hub


@pytest.fixture(name="state")
def enrolled_state(tmp_path: Path, hub: FakeHub) -> Path:
    """``state``: an agent state directory enrolled with ``hub``."""
    state = tmp_path / "state"
    enroll(state, hub)
    return state


class AgentThread:
    """An :class:`AgentRunner` running in a thread with its own event loop (as ``grocerysync-agent run`` does)."""

    def __init__(self, state_dir: Path, plugins: PluginManager | Callable[[], PluginManager], **options: Any) -> None:
        factory = plugins if callable(plugins) else lambda: plugins
        self.runner = AgentRunner(state_dir, plugins=factory, options=RunnerOptions(**{**FAST, **options}))
        self.code: int | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="agent", daemon=True)

    def _main(self) -> None:
        try:
            self.code = asyncio.run(self.runner.run())
        except BaseException as exc:
            self.error = exc

    def start(self) -> AgentThread:
        self._thread.start()
        return self

    def join(self, timeout: float = 30.0) -> int:
        """Wait for the runner to return; its exit status."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the agent did not stop"
        if self.error is not None:
            raise self.error
        assert self.code is not None
        return self.code

    def stop(self, timeout: float = 30.0) -> int:
        """Ask the runner to stop, as a service stop would; its exit status."""
        self.runner.stop()
        return self.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


def spool_contents(state_dir: Path) -> dict[str, int]:
    """Records waiting in the agent's spool, per kind."""
    with Spool(state_dir / "spool.sqlite") as spool:
        return spool.stats().records


# -- test plugins ------------------------------------------------------------------------------------


class SlowConfig(BaseModel):
    rows: int = 100
    delay: float = 0.05


def slow_source() -> PosConnector:
    """POS connector ``slow``: ``rows`` generated items, one batch every ``delay`` seconds."""

    async def check(config: SlowConfig) -> CheckResult:
        return CheckResult.success()

    async def read(config: SlowConfig, request: ReadRequest) -> AsyncIterator[RawBatch]:
        rows = make_rows(config.rows)
        for start in range(0, len(rows), request.batch_size):
            await asyncio.sleep(config.delay)
            chunk = rows[start : start + request.batch_size]
            yield RawBatch([RawRecord(f"row {start + n + 2}", r) for n, r in enumerate(chunk)], [])

    return PosConnector(name="slow", description="slow generated rows", config_model=SlowConfig, check=check, read=read)


class LeakyDestination(RecordingDestination):
    """A recorder whose library quotes its secret in log lines and errors (what redaction is for)."""

    fail_with_secret: bool = False

    def record(self) -> Destination:
        base = super().record()
        leaky = logging.getLogger("grocerysync.tests.leaky")

        def open_(config: DestConfig, secrets: DestSecrets, context: Any) -> Any:
            token = secrets.token.get_secret_value()
            leaky.warning("connecting to shop %s with token %s", config.shop, token)
            manager = base.open(config, secrets, context)
            if self.fail_with_secret:
                raise RuntimeError(f"login refused for token {token!r}")
            return manager

        return Destination(
            name="recorder",
            description=base.description,
            config_model=DestConfig,
            secrets_model=DestSecrets,
            check=base.check,
            open=open_,
        )


class _TestPlugins:
    def __init__(self, dest: RecordingDestination) -> None:
        self.dest = dest

    @hookimpl
    def grocerysync_pos_connectors(self) -> list[PosConnector]:
        return [slow_source()]

    @hookimpl
    def grocerysync_destinations(self) -> list[Destination]:
        return [self.dest.record()]


def test_plugins(dest: RecordingDestination) -> PluginManager:
    """A plugin manager with only the ``slow`` source and the given recording destination."""
    pm = PluginManager(autoload=False)
    pm.register(_TestPlugins(dest), name="runner-test-plugins", distribution="runner-test-plugins", version="1.0")
    return pm


test_plugins.__test__ = False  # type: ignore[attr-defined]  # not a test, whatever its name says


def slow_job(
    *,
    rows: int = 100,
    delay: float = 0.05,
    token: str = "t0ken-value",  # noqa: S107 (test data)
    name: str = "slow job",
) -> dict:
    """A job reading ``rows`` items from the slow source, ten per batch, into the recorder."""
    return {
        "name": name,
        "source": {"plugin": "slow", "config": {"rows": rows, "delay": delay}},
        "destination": {"plugin": "recorder", "config": {"shop": "demo"}, "secrets": {"token": token}},
        "options": {"batch_size": 10},
    }


# -- real jobs: the CSV connector and the folder destination --------------------------------------


def write_export(path: Path, good: int, bad: int) -> Path:
    """A POS export CSV with ``good`` valid rows and ``bad`` rows without a name (rejected), interleaved."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Item No", "Description", "Price"])
        for n in range(good + bad):
            name = "" if n % 2 == 1 and n // 2 < bad else f"Item {n}"
            writer.writerow([f"{10000 + n}", name, f"{n % 40 + 1}.49"])
    return path


def csv_to_folder_job(export: Path, out: Path, *, name: str = "csv to folder") -> dict[str, Any]:
    """A real job: the CSV connector reading ``export`` into the folder destination writing to ``out``."""
    return {
        "name": name,
        "source": {
            "plugin": "csv",
            "config": {"path": str(export), "columns": {"item_id": "Item No", "name": "Description", "price": "Price"}},
        },
        "destination": {"plugin": "folder", "config": {"path": str(out), "format": "jsonl"}},
        "options": {"batch_size": 500},
    }


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]
