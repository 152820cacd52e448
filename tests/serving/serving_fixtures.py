"""Helpers of the serving tests: seeded exact vectors and a tiny bundle."""

from __future__ import annotations

import numpy as np

from lmmrec.data.dataset import Dataset
from lmmrec.serving.bundle import Bundle


def exact_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    """Multiples of 1/16: inner products are exact in float32, so every ranking path (blocks,
    batches, a reference product) computes the very same scores."""
    rng = np.random.default_rng(seed)
    return (rng.integers(-40, 41, (n, dim)) / 16).astype(np.float32)


def tiny_bundle(dataset: Dataset) -> Bundle:
    """A bundle of the planted dataset with seeded vectors (no training needed)."""
    return Bundle(
        user_vecs=exact_vectors(dataset.n_users, 8, seed=1),
        item_vecs=exact_vectors(dataset.n_items, 8, seed=2),
        user_ids=[f"u{u}" for u in range(dataset.n_users)],
        item_ids=[f"i{i}" for i in range(dataset.n_items)],
        seen=(dataset.train + dataset.valid + dataset.test).tocsr(),
        texts=[f"item number {i}" for i in range(dataset.n_items)],
        images=[None if i % 3 else f"/images/{i}.jpg" for i in range(dataset.n_items)],
        manifest={"model": "random", "dataset": dataset.name},
    )
