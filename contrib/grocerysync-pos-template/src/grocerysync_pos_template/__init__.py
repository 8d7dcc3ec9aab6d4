"""A GrocerySync POS connector that reads a SQLite item table (the template plugin authors copy)."""

from grocerysync_pos_template.config import SqliteTableConfig

__all__ = ["SqliteTableConfig"]
