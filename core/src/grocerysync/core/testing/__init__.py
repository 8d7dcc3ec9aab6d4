"""The contract-test kit: ready pytest suites and hypothesis strategies for GrocerySync plugins.

Install with ``pip install grocerysync-core[testing]``. A plugin's ``tests/test_contract.py`` subclasses
:class:`PosConnectorContract` or :class:`DestinationContract`, sets the plugin's name and capability flags,
and overrides a few fixtures; ``docs/plugin-authors.md`` walks through it. :mod:`.strategies` holds the
hypothesis strategies for items and raw POS values.
"""

from __future__ import annotations

try:
    import hypothesis  # noqa: F401
    import pytest  # noqa: F401
    import pytest_asyncio  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"grocerysync.core.testing needs the 'testing' extra ({exc.name} is missing); "
        "install it with: pip install 'grocerysync-core[testing]'"
    ) from exc

from grocerysync.core.testing import strategies
from grocerysync.core.testing._support import EXAMPLES, plain_items
from grocerysync.core.testing.destination import DestinationContract
from grocerysync.core.testing.pos import PosConnectorContract, ReadOutcome

__all__ = ["EXAMPLES", "DestinationContract", "PosConnectorContract", "ReadOutcome", "plain_items", "strategies"]
