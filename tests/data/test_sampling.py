"""Negative sampling: never a training item, roughly uniform, every interaction once per epoch."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from lmmrec.data.dataset import Dataset
from lmmrec.data.sampling import NegativeSampler
from lmmrec.errors import DataError


def test_negatives_are_never_training_items(tiny_dataset: Dataset) -> None:
    sampler = NegativeSampler(tiny_dataset.train)
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(tiny_dataset.n_users), 50)
    negatives = sampler.sample(users, rng)
    train = tiny_dataset.train.toarray()
    assert not train[users, negatives].any()


def test_negatives_are_uniform_over_unseen_items() -> None:
    # one user who saw items 0 and 1 of 5: negatives uniform over {2, 3, 4}
    sampler = NegativeSampler(sp.csr_matrix(np.array([[1, 1, 0, 0, 0]], dtype=np.float32)))
    negatives = sampler.sample(np.zeros(30_000, dtype=np.int64), np.random.default_rng(1))
    counts = np.bincount(negatives, minlength=5)
    assert counts[:2].sum() == 0
    np.testing.assert_allclose(counts[2:] / 30_000, 1 / 3, atol=0.015)


def test_epoch_covers_every_training_interaction_once(tiny_dataset: Dataset) -> None:
    sampler = NegativeSampler(tiny_dataset.train)
    batches = list(sampler.epoch(32, np.random.default_rng(2)))
    assert len(batches) == sampler.n_batches(32)
    users = np.concatenate([b.users.numpy() for b in batches])
    items = np.concatenate([b.pos_items.numpy() for b in batches])
    pairs = sorted(zip(users.tolist(), items.tolist(), strict=True))
    coo = tiny_dataset.train.tocoo()
    assert pairs == sorted(zip(coo.row.tolist(), coo.col.tolist(), strict=True))


@pytest.mark.parametrize("world", [2, 3])  # 38 batches: with 3 processes, two wrap around
def test_sharded_epochs_cover_the_batches_in_equal_counts(
    tiny_dataset: Dataset, world: int
) -> None:
    sampler = NegativeSampler(tiny_dataset.train)
    full = list(sampler.epoch(16, np.random.default_rng(3)))
    shards = [
        list(sampler.epoch(16, np.random.default_rng(3), shard=(r, world))) for r in range(world)
    ]
    steps = -(-len(full) // world)
    assert [len(s) for s in shards] == [steps] * world  # gradient syncs pair up under DDP
    for step in range(steps):
        for rank in range(world):  # batch (rank + step * world), wrapping to the epoch's start
            expected = full[(rank + step * world) % len(full)]
            assert np.array_equal(shards[rank][step].users.numpy(), expected.users.numpy())


def test_a_user_who_saw_every_item_is_an_error() -> None:
    with pytest.raises(DataError, match="every item"):
        NegativeSampler(sp.csr_matrix(np.ones((2, 3), dtype=np.float32)))


def test_candidate_negatives_narrow_the_draw_and_all_of_them_change_nothing() -> None:
    # user 0 saw item 0, user 1 item 1; items 3 and 4 are not candidates
    train = sp.csr_matrix(np.array([[1, 0, 0, 0, 0], [0, 1, 0, 0, 0]], dtype=np.float32))
    users = np.repeat(np.arange(2), 5_000)
    narrowed = NegativeSampler(train, np.array([0, 1, 2])).sample(users, np.random.default_rng(4))
    assert set(narrowed[users == 0].tolist()) == {1, 2}
    assert set(narrowed[users == 1].tolist()) == {0, 2}
    every = NegativeSampler(train, np.arange(5)).sample(users, np.random.default_rng(4))
    default = NegativeSampler(train).sample(users, np.random.default_rng(4))
    assert np.array_equal(every, default)  # the same draws: runs before candidates existed hold
    with pytest.raises(DataError, match="every item that can be a negative"):
        NegativeSampler(train, np.array([0]))
