"""Fixtures of the training tests: a planted dataset with item content (``tiny_towers``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_towers import content_dataset

from lmmrec.data.dataset import Dataset


@pytest.fixture
def content(tmp_path: Path) -> Dataset:
    return content_dataset(tmp_path / "content")
