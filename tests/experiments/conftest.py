"""The ``tiny_source`` fixture: the planted dataset saved once, with a random feature set."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from experiment_helpers import FEATURES

from lmmrec.data.dataset import Dataset
from lmmrec.data.features import FeatureSet


def _planted_dataset() -> Dataset:
    """``tests/conftest.py``'s planted dataset (loaded by path: this file is a conftest too)."""
    path = Path(__file__).resolve().parents[1] / "conftest.py"
    spec = importlib.util.spec_from_file_location("_lmmrec_tests_conftest", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.planted_dataset()


@pytest.fixture(scope="session")
def tiny_source(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A saved planted dataset (60 users, 40 items) holding feature set ``rand``."""
    root = tmp_path_factory.mktemp("data") / "tiny"
    dataset = _planted_dataset()
    rng = np.random.default_rng(0)
    arrays = {
        "image": rng.normal(size=(dataset.n_items, 8)).astype(np.float32),
        "text": rng.normal(size=(dataset.n_items, 6)).astype(np.float32),
    }
    dataset.add_feature_set(FeatureSet(FEATURES, arrays))
    dataset.save(root)
    return str(root)
