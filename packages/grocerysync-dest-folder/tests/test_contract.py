"""The destination contract (grocerysync.core.testing) run against the ``folder`` destination, in both formats.

``read_back`` (from FeedDestinationContract) is what a platform taking the feed files would hold: every
committed feed file in the folder, oldest first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from grocerysync.core.feeds import FeedFormat
from grocerysync.core.testing.feeds import FeedDestinationContract


class FolderContract(FeedDestinationContract):
    destination_name = "folder"
    supports_delete = True
    transactional = True

    @pytest.fixture
    def feed_folder(self, tmp_path: Path) -> Path:
        folder = tmp_path / "feeds"
        folder.mkdir()
        return folder

    @pytest.fixture
    def destination_config(self, feed_folder: Path) -> dict[str, Any]:
        return {"path": str(feed_folder), "format": self.feed_format.value, "file_prefix": "store7_"}

    @pytest.fixture
    def unreachable_config(self, tmp_path: Path) -> dict[str, Any]:
        return {"path": str(tmp_path / "share-not-mounted"), "format": self.feed_format.value}


class TestFolderCsvContract(FolderContract):
    feed_format = FeedFormat.CSV


class TestFolderJsonlContract(FolderContract):
    feed_format = FeedFormat.JSONL
