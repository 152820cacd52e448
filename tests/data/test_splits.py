"""Per-user splits: MMRec's held-out lengths by hand, seeding, time order, leave-one-out, errors."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from lmmrec.data.dataset import Dataset
from lmmrec.data.splits import (
    TEST,
    TRAIN,
    VALID,
    leave_one_out,
    make_split,
    random_split,
    temporal_split,
)
from lmmrec.errors import DataError

# interactions per user -> (train, valid, test); MMRec: 1/1 below 10, else int(0.2 n) // 2 each
HAND_COUNTS = {
    2: (2, 0, 0),
    3: (1, 1, 1),
    5: (3, 1, 1),
    9: (7, 1, 1),
    10: (8, 1, 1),
    20: (16, 2, 2),
    25: (21, 2, 2),
}


def _users(sizes: list[int], seed: int = 0) -> np.ndarray:
    """User index per interaction, user ``u`` having ``sizes[u]`` rows, in shuffled file order."""
    users = np.repeat(np.arange(len(sizes)), sizes)
    return np.random.default_rng(seed).permutation(users)


def _counts_per_user(users: np.ndarray, labels: np.ndarray) -> list[tuple[int, int, int]]:
    return [
        tuple(int(np.sum(labels[users == u] == s)) for s in (TRAIN, VALID, TEST))
        for u in range(users.max() + 1)
    ]


def test_random_split_counts_match_mmrec_lengths() -> None:
    sizes = list(HAND_COUNTS)
    users = _users(sizes)
    labels = random_split(users, seed=3)
    assert labels.dtype == np.int8
    assert _counts_per_user(users, labels) == [HAND_COUNTS[n] for n in sizes]


def test_random_split_is_reproducible_and_seed_dependent() -> None:
    users = _users([10] * 50)
    first = random_split(users, seed=11)
    np.testing.assert_array_equal(first, random_split(users, seed=11))
    assert not np.array_equal(first, random_split(users, seed=12))


def test_temporal_split_holds_out_the_latest() -> None:
    users = _users([10, 25, 5])
    rng = np.random.default_rng(1)
    times = rng.permutation(len(users)).astype(np.float64)  # distinct times, random order
    labels = temporal_split(users, times)
    assert _counts_per_user(users, labels) == [HAND_COUNTS[10], HAND_COUNTS[25], HAND_COUNTS[5]]
    for u in range(3):
        mine = users == u
        # every test time is later than every valid time, and every valid later than every train
        assert times[mine & (labels == TEST)].min() > times[mine & (labels == VALID)].max()
        assert times[mine & (labels == VALID)].min() > times[mine & (labels == TRAIN)].max()


def test_temporal_split_breaks_ties_by_file_order() -> None:
    users = np.zeros(4, dtype=np.int64)
    labels = temporal_split(users, np.array([5.0, 5.0, 5.0, 1.0]))
    np.testing.assert_array_equal(labels, [TRAIN, VALID, TEST, TRAIN])


def test_leave_one_out_with_times() -> None:
    users = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2])
    times = np.array([4, 1, 3, 2, 9, 7, 8, 1, 2])
    labels = leave_one_out(users, times)
    np.testing.assert_array_equal(
        labels, [TEST, TRAIN, VALID, TRAIN, TEST, TRAIN, VALID, TRAIN, TRAIN]
    )


def test_leave_one_out_without_times_holds_one_each() -> None:
    users = _users([12, 3, 2, 30])
    labels = leave_one_out(users, seed=5)
    assert _counts_per_user(users, labels) == [(10, 1, 1), (1, 1, 1), (2, 0, 0), (28, 1, 1)]
    np.testing.assert_array_equal(labels, leave_one_out(users, seed=5))


@pytest.mark.parametrize("kind", ["random", "temporal", "loo"])
def test_train_valid_test_partition_the_input(kind: str) -> None:
    rng = np.random.default_rng(7)
    sizes = [4, 9, 13, 30, 6]
    # each user's items are distinct, so the dataset keeps every pair exactly once
    users = np.repeat(np.arange(len(sizes)), sizes)
    items = np.concatenate([rng.choice(40, n, replace=False) for n in sizes])
    order = rng.permutation(len(users))
    users, items = users[order], items[order]
    times = rng.permutation(len(users))
    labels = make_split(kind, users, times, seed=2022, where="test")
    dataset = Dataset.from_interactions(users, items, labels, name="t", where="test", n_items=40)
    frame = dataset.interaction_frame()
    # as multisets of (user, item, split): nothing lost, duplicated or moved between splits
    assert Counter(zip(frame["user"], frame["item"], frame["split"], strict=True)) == Counter(
        zip(users.tolist(), items.tolist(), labels.tolist(), strict=True)
    )
    assert dataset.n_interactions == len(users)


def test_make_split_errors() -> None:
    users = _users([5, 5])
    with pytest.raises(DataError, match="unknown split 'weekly'; use one of random"):
        make_split("weekly", users, None, seed=0, where="table.csv")  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"table\.csv: a temporal split needs a timestamp column"):
        make_split("temporal", users, None, seed=0, where="table.csv")
