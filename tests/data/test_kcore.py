"""Iterative k-core: removals cascade between users and items until every degree is >= k."""

from __future__ import annotations

import numpy as np
import pytest

from lmmrec.data.kcore import k_core_mask


def test_removals_cascade_until_stable() -> None:
    # 2-core. Item 3 has one user, so (3, 3) goes; then user 3 has one item, so (3, 2) goes;
    # then item 2 has one user, so (2, 2) goes; then user 2 has one item, so (2, 1) goes.
    # A single pass would only drop (3, 3).
    users = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    items = np.array([0, 1, 0, 1, 1, 2, 2, 3])
    keep = k_core_mask(users, items, 2)
    np.testing.assert_array_equal(keep, [True] * 4 + [False] * 4)


def test_item_removal_pushes_user_below_k() -> None:
    # 3-core: users 0-2 share items 0-2; user 3 has items 0, 1 and 3, item 3 has only user 3
    users = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    items = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 3])
    keep = k_core_mask(users, items, 3)
    np.testing.assert_array_equal(keep, [True] * 9 + [False] * 3)


@pytest.mark.parametrize("k", [0, 1])
def test_k_at_most_one_keeps_everything(k: int) -> None:
    users = np.array([0, 1, 2])
    items = np.array([5, 5, 7])
    assert k_core_mask(users, items, k).all()


def test_every_kept_degree_reaches_k() -> None:
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 200, 3000), rng.integers(0, 150, 3000)
    keep = k_core_mask(users, items, 12)
    assert 0 < keep.sum() < len(keep)
    for codes in (users[keep], items[keep]):
        degree = np.bincount(codes)
        assert degree[degree > 0].min() >= 12


def test_empty_input() -> None:
    empty = np.zeros(0, dtype=np.int64)
    assert k_core_mask(empty, empty, 5).shape == (0,)
