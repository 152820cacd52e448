"""Shared fixtures: tiny generated datasets with a planted structure (never real data)."""

from __future__ import annotations

import pytest

from lmmrec.data.dataset import Dataset
from planted import planted_dataset


@pytest.fixture
def tiny_dataset() -> Dataset:
    return planted_dataset()
