"""GrocerySync ``folder`` destination: item feed files written atomically into a local or network folder."""

from grocerysync_dest_folder.folder import FolderConfig, FolderWriter, check, open_writer, prune
from grocerysync_dest_folder.plugin import DESTINATION

__all__ = ["DESTINATION", "FolderConfig", "FolderWriter", "check", "open_writer", "prune"]
