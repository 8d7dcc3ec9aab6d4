"""Every task of the workspace: tests, lint, typing, contract, demo, bench."""

from __future__ import annotations

import os
from pathlib import Path

import nox

ROOT = Path(__file__).parent
nox.options.default_venv_backend = "uv|virtualenv"
# Byte-compile what is installed, as pip does by default and as a store machine has it: otherwise the first
# import of each module compiles it, which costs time and (for the benchmarks' peak RSS) memory.
os.environ.setdefault("UV_COMPILE_BYTECODE", "1")
nox.options.sessions = ["tests", "lint", "typing", "contract"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"
PLUGINS = sorted(
    str(p.parent.relative_to(ROOT))
    for pattern in ("packages/*/pyproject.toml", "contrib/*/pyproject.toml")
    for p in ROOT.glob(pattern)
)
# Folders whose tests run in the `tests` session, each in its own pytest process (their conftests differ).
TEST_DIRS = ["core/tests", "agent/tests", "hub/tests", *(f"{p}/tests" for p in PLUGINS), "tests"]


def _editable(*paths: str) -> list[str]:
    # Local distributions depend on each other by name; installing them in one resolver call keeps the
    # resolver from ever looking for them on a package index.
    args: list[str] = []
    for path in paths:
        args += ["-e", path]
    return args


def _install_workspace(session: nox.Session, *extra: str) -> None:
    session.install(*_editable("core[testing]", "agent", "hub[test]", *PLUGINS), *extra)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run every test suite (core, agent, hub, each plugin, cross-part) against real services."""
    _install_workspace(session, "pytest-timeout")
    targets = session.posargs or [d for d in TEST_DIRS if (ROOT / d).is_dir()]
    for target in targets:
        session.run("pytest", target, "-p", "no:cacheprovider", "--timeout=300", "-q")


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Check style and common bugs with ruff."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typing(session: nox.Session) -> None:
    """Type-check each distribution with mypy (strict)."""
    _install_workspace(session, "mypy")
    # By import name: grocerysync.* is a namespace package shared by core, agent and hub.
    modules = ["grocerysync.core", "grocerysync.agent", "grocerysync.hub"]
    modules += [next((ROOT / p / "src").glob("*/__init__.py")).parent.name for p in PLUGINS]
    for module in modules:
        session.run("mypy", "-p", module)


@nox.session(python=PYTHON)
@nox.parametrize("plugin", PLUGINS, ids=[Path(p).name for p in PLUGINS])
def contract(session: nox.Session, plugin: str) -> None:
    """Run the contract suites against one plugin, in an environment holding only core and that plugin."""
    session.install(*_editable("core[testing]", plugin))
    session.run("pytest", f"{plugin}/tests/test_contract.py", "-p", "no:cacheprovider", "-q")


@nox.session(python=PYTHON, default=False)
def demo(session: nox.Session) -> None:
    """Export a sample catalogue to a feed folder by hand, then from a hub with an enrolled agent (Ctrl+C stops)."""
    session.install(
        *_editable("core", "agent", "hub", "packages/grocerysync-pos-csv", "packages/grocerysync-dest-folder")
    )
    session.run("python", "contrib/demo/demo.py", *session.posargs)


@nox.session(python=PYTHON, default=False)
def bench(session: nox.Session) -> None:
    """Run the benchmarks; each result is printed as one line `BENCH {json}`."""
    sources = [
        "core/src",
        "agent/src",
        "hub/src",
        "packages/grocerysync-pos-csv/src",
        "packages/grocerysync-dest-sftp/src",
        # The dispatch benchmarks' jobs write to a folder: the hub validates their config with this plugin.
        "packages/grocerysync-dest-folder/src",
    ]
    session.install(*_editable(*(s.removesuffix("/src") for s in sources)))
    # Editable sources are not byte-compiled by the installer; compile them as an installed wheel would be.
    session.run("python", "-m", "compileall", "-q", *sources)
    session.run("python", "tests/bench/run.py", *session.posargs)
