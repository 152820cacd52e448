"""The block-wise evaluator against a brute-force per-user computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lmmrec.data.dataset import Dataset
from lmmrec.errors import DataError
from lmmrec.evaluation.evaluator import Evaluator


def brute_force(
    dataset: Dataset,
    split: str,
    user_vecs: torch.Tensor,
    item_vecs: torch.Tensor,
    k: int,
    mask_valid: bool = False,
) -> dict[str, float]:
    """Per-user Python reference: rank, mask, count (only used to check the evaluator)."""
    held = dataset.split(split)
    recalls, ndcgs, precisions, maps, hits_any = [], [], [], [], []
    for u in range(dataset.n_users):
        truth = set(held[u].indices.tolist())
        if not truth:
            continue
        scores = (user_vecs[u] @ item_vecs.T).numpy().astype(np.float64)
        seen = set(dataset.train[u].indices.tolist())
        if mask_valid:
            seen |= set(dataset.valid[u].indices.tolist())
        ranked = [i for i in np.argsort(-scores, kind="stable") if i not in seen][:k]
        hit = [1.0 if i in truth else 0.0 for i in ranked]
        recalls.append(sum(hit) / len(truth))
        precisions.append(sum(hit) / k)
        hits_any.append(float(sum(hit) > 0))
        dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hit))
        idcg = sum(1 / math.log2(r + 2) for r in range(min(len(truth), k)))
        ndcgs.append(dcg / idcg)
        ap = sum(h * sum(hit[: r + 1]) / (r + 1) for r, h in enumerate(hit))
        maps.append(ap / min(len(truth), k))
    return {
        f"recall@{k}": np.mean(recalls),
        f"ndcg@{k}": np.mean(ndcgs),
        f"precision@{k}": np.mean(precisions),
        f"map@{k}": np.mean(maps),
        f"hit@{k}": np.mean(hits_any),
    }


@pytest.mark.parametrize("split", ["valid", "test"])
@pytest.mark.parametrize("batch_size", [7, 4096])
def test_evaluator_matches_brute_force(tiny_dataset: Dataset, split: str, batch_size: int) -> None:
    gen = torch.Generator().manual_seed(3)
    users = torch.randn(tiny_dataset.n_users, 8, generator=gen)
    items = torch.randn(tiny_dataset.n_items, 8, generator=gen)
    got = Evaluator(tiny_dataset, split, ks=[5, 10], batch_size=batch_size).evaluate(users, items)
    for k in (5, 10):
        for name, value in brute_force(tiny_dataset, split, users, items, k).items():
            assert got[name] == pytest.approx(value, abs=1e-6), name


def test_mask_valid_at_test_excludes_validation_items(tiny_dataset: Dataset) -> None:
    gen = torch.Generator().manual_seed(4)
    users = torch.randn(tiny_dataset.n_users, 8, generator=gen)
    items = torch.randn(tiny_dataset.n_items, 8, generator=gen)
    got = Evaluator(tiny_dataset, "test", ks=[10], mask_valid_at_test=True).evaluate(users, items)
    expected = brute_force(tiny_dataset, "test", users, items, 10, mask_valid=True)
    assert got["recall@10"] == pytest.approx(expected["recall@10"], abs=1e-6)
    unmasked = brute_force(tiny_dataset, "test", users, items, 10)
    assert expected["recall@10"] != pytest.approx(unmasked["recall@10"])


def test_training_items_are_never_recommended(tiny_dataset: Dataset) -> None:
    # item vectors that put every user's training items on top: all must be masked away
    train = torch.from_numpy(tiny_dataset.train.toarray())
    users = torch.eye(tiny_dataset.n_users)
    items = train.T * 100.0  # score(u, i) = 100 if i in train(u)
    evaluator = Evaluator(tiny_dataset, "test", ks=[5])
    perfect_items = items + torch.from_numpy(tiny_dataset.test.toarray()).T * 10.0
    assert evaluator.evaluate(users, perfect_items)["hit@5"] == pytest.approx(1.0)


def test_evaluator_rejects_bad_arguments(tiny_dataset: Dataset) -> None:
    with pytest.raises(DataError, match="'valid' or 'test'"):
        Evaluator(tiny_dataset, "train")


def test_cut_offs_above_the_catalogue_rank_every_item(tiny_dataset: Dataset) -> None:
    # 40 items: K = 50 ranks all 40 (recall@50 = recall@40, precision@50 divides by 50)
    gen = torch.Generator().manual_seed(5)
    users = torch.randn(tiny_dataset.n_users, 8, generator=gen)
    items = torch.randn(tiny_dataset.n_items, 8, generator=gen)
    with pytest.warns(UserWarning, match=r"40 items.*K=\[50\].*set ks=\[5, 40\]"):
        evaluator = Evaluator(tiny_dataset, "test", ks=[5, 40, 50])
    got = evaluator.evaluate(users, items)
    assert got["recall@50"] == pytest.approx(got["recall@40"]) == pytest.approx(1.0)
    assert got["ndcg@50"] == pytest.approx(got["ndcg@40"])
    assert got["precision@50"] == pytest.approx(got["precision@40"] * 40 / 50)
    assert got["recall@5"] == pytest.approx(
        brute_force(tiny_dataset, "test", users, items, 5)["recall@5"]
    )


def test_per_user_values_average_to_the_means(tiny_dataset: Dataset) -> None:
    gen = torch.Generator().manual_seed(6)
    users = torch.randn(tiny_dataset.n_users, 8, generator=gen)
    items = torch.randn(tiny_dataset.n_items, 8, generator=gen)
    evaluator = Evaluator(tiny_dataset, "valid", ks=[5, 10], batch_size=9)
    per_user = evaluator.evaluate(users, items, per_user=True)
    expected_users = np.flatnonzero(np.diff(tiny_dataset.valid.indptr) > 0)
    assert np.array_equal(per_user.users, expected_users)
    assert set(per_user.values) == set(evaluator.evaluate(users, items))
    for name, mean in evaluator.evaluate(users, items).items():
        assert per_user.values[name].shape == (len(expected_users),)
        assert per_user.values[name].mean() == pytest.approx(mean, abs=1e-9)
    # one user's values by hand: recall@10 = hits in the top 10 / held-out items
    u, row = int(expected_users[3]), 3
    scores = (users[u] @ items.T).numpy()
    scores[tiny_dataset.train[u].indices] = -np.inf
    top = np.argsort(-scores, kind="stable")[:10]
    truth = set(tiny_dataset.valid[u].indices.tolist())
    recall = sum(i in truth for i in top) / len(truth)
    assert per_user.values["recall@10"][row] == pytest.approx(recall)
    assert set(per_user.arrays()) == {"users", *per_user.values}
