"""Meta-tests: every hook is documented in its docstring and in the plugin author guide, and tested."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from grocerysync.core import hookspecs

ROOT = Path(__file__).resolve().parents[2]
HOOKS = sorted(n for n, f in vars(hookspecs).items() if n.startswith("grocerysync_") and inspect.isfunction(f))


def test_there_are_hooks() -> None:
    assert "grocerysync_pos_connectors" in HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_reference_docstring(hook: str) -> None:
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    assert len(doc) > 80, f"{hook} needs a docstring: it is the reference documentation"
    assert ":return:" in doc


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_in_the_plugin_author_guide(hook: str) -> None:
    guide = ROOT / "docs" / "plugin-authors.md"
    assert hook in guide.read_text(encoding="utf-8"), f"docs/plugin-authors.md does not mention {hook}"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_used_by_a_test(hook: str) -> None:
    tests = [p for p in (ROOT / "core" / "tests").glob("test_*.py") if p.name != Path(__file__).name]
    assert any(hook in p.read_text(encoding="utf-8") for p in tests), f"no test in core/tests exercises {hook}"
