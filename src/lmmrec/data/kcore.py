"""Iterative k-core filtering of an interaction list (vectorised)."""

from __future__ import annotations

import numpy as np


def k_core_mask(users: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """Rows kept by the iterative k-core: every kept user and item has at least ``k`` kept rows.

    Removing a sparse item can push a user below ``k`` and the reverse, so filtering repeats until
    nothing changes (MMRec ``preprocessing/0rating2inter.ipynb`` does the same).

    Args:
        users, items: ``[N]`` non-negative integer codes.
        k: minimum degree; ``k <= 1`` keeps everything.

    Returns:
        ``[N]`` boolean mask of the rows kept.
    """
    keep = np.ones(len(users), dtype=bool)
    if k <= 1:
        return keep
    while True:
        user_degree = np.bincount(users[keep], minlength=users.max(initial=-1) + 1)
        item_degree = np.bincount(items[keep], minlength=items.max(initial=-1) + 1)
        still = keep & (user_degree[users] >= k) & (item_degree[items] >= k)
        if still.sum() == keep.sum():
            return still
        keep = still
