"""GrocerySync POS connector for item exports that store POS systems write as CSV files."""

from grocerysync_pos_csv.config import CsvConfig
from grocerysync_pos_csv.plugin import CONNECTOR, check, read

__all__ = ["CONNECTOR", "CsvConfig", "check", "read"]
