"""Tiny generated datasets with a planted structure (never real data), for fixtures and tests."""

from __future__ import annotations

import numpy as np

from lmmrec.data.dataset import Dataset
from lmmrec.data.splits import random_split


def planted_dataset(
    n_users: int = 60, n_items: int = 40, n_groups: int = 4, seed: int = 0, per_user: int = 12
) -> Dataset:
    """Users and items fall into ``n_groups`` clusters; users mostly pick items of their cluster.

    A recommender that learns anything ranks in-cluster items first, so metrics well above random
    are expected after a little training.
    """
    rng = np.random.default_rng(seed)
    user_group = rng.integers(0, n_groups, n_users)
    item_group = np.arange(n_items) % n_groups
    users, items = [], []
    for u in range(n_users):
        same = np.flatnonzero(item_group == user_group[u])
        other = np.flatnonzero(item_group != user_group[u])
        n_same = per_user - 2
        chosen = np.concatenate(
            [rng.choice(same, n_same, replace=False), rng.choice(other, 2, replace=False)]
        )
        users += [u] * len(chosen)
        items += chosen.tolist()
    users_arr, items_arr = np.array(users), np.array(items)
    labels = random_split(users_arr, seed=seed)
    return Dataset.from_interactions(
        users_arr,
        items_arr,
        labels,
        name="planted",
        where="planted fixture",
        n_users=n_users,
        n_items=n_items,
    )
