"""GrocerySync store agent: runs exports from the store's POS to its e-commerce platforms."""

from grocerysync.agent.pipeline import run_export
from grocerysync.agent.summary import Progress, RunSummary

__all__ = ["Progress", "RunSummary", "run_export"]
