"""Item cold-start evaluation: candidate pools in the evaluator, warm and cold pools, content."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_evaluator import brute_force

from lmmrec.data.dataset import Dataset
from lmmrec.data.features import FeatureSet
from lmmrec.data.splits import TEST, TRAIN, VALID
from lmmrec.errors import DataError
from lmmrec.evaluation.evaluator import Evaluator
from lmmrec.evaluation.pools import evaluate_pools
from lmmrec.models.cold_start import content_item_vectors
from lmmrec.training import RunConfig, TrainConfig, evaluate_run_pools, train
from lmmrec.training.run import load_run
from planted import with_cold_items


def _two_users() -> Dataset:
    """u0 trained on item 0, u1 on item 1; items 2 and 3 are cold (valid/test only)."""
    users = np.array([0, 1, 0, 1, 0, 1])
    items = np.array([0, 1, 2, 3, 3, 2])
    labels = np.array([TRAIN, TRAIN, VALID, VALID, TEST, TEST])
    return Dataset.from_interactions(users, items, labels, name="two", where="test")


def test_pools_ranked_apart_by_hand() -> None:
    """Scores are one-dimensional: u0 = +1 and u1 = -1 times the item's value (0, 0, 1, 2)."""
    dataset = _two_users()
    assert dataset.cold_items().tolist() == [False, False, True, True]
    assert dataset.statistics()["items_unseen_in_train"] == 2
    users = torch.tensor([[1.0], [-1.0]])
    items = torch.tensor([[0.0], [0.0], [1.0], [2.0]])
    content = torch.tensor([[2.0], [1.0]])  # items 2, 3 placed from content: the order swaps
    results = evaluate_pools(dataset, "valid", users, items, {"content": content}, ks=[1, 2])
    # no validation item is warm, so the warm pool is left out
    assert [(r.pool, r.scored_by, r.n_items, r.n_users) for r in results] == [
        ("all", "learned", 4, 2),
        ("all", "content", 4, 2),
        ("cold", "learned", 2, 2),
        ("cold", "content", 2, 2),
    ]
    every, every_placed, cold, placed = (r.metrics for r in results)
    # all: u0 ranks 3, 2, 1 (0 seen): its item 2 second; u1 ranks 0, 2, 3: its item 3 third
    assert every["recall@1"] == 0.0 and every["recall@2"] == 0.5
    assert every["ndcg@2"] == pytest.approx(0.5 / math.log2(3))
    # all, cold items at (2, 1): u0 ranks 2, 3, 1: item 2 first; u1 ranks 0, 3, 2: item 3 second
    assert every_placed["recall@1"] == 0.5 and every_placed["recall@2"] == 1.0
    # cold, learned: u0 ranks 3, 2 and u1 ranks 2, 3: both positives second
    assert cold["recall@1"] == 0.0 and cold["ndcg@2"] == pytest.approx(1 / math.log2(3))
    # cold, content (2, 1): u0 ranks 2, 3 and u1 ranks 3, 2: both first
    assert placed["recall@1"] == 1.0 and placed["ndcg@1"] == 1.0
    with pytest.raises(ValueError, match=r"placement 'content': expected \[2, 1\]"):
        evaluate_pools(dataset, "valid", users, items, {"content": content[:1]})


@pytest.mark.parametrize("split", ["valid", "test"])
def test_a_pool_is_the_brute_force_over_its_items(tiny_dataset: Dataset, split: str) -> None:
    gen = torch.Generator().manual_seed(5)
    users = torch.randn(tiny_dataset.n_users, 8, generator=gen)
    items = torch.randn(tiny_dataset.n_items, 8, generator=gen)
    pool = np.random.default_rng(0).random(tiny_dataset.n_items) < 0.5
    got = Evaluator(tiny_dataset, split, ks=[5], items=pool, batch_size=7).evaluate(users, items)
    # the same ranking on a dataset holding only the pool's columns
    keep = np.flatnonzero(pool)
    sub = Dataset.__new__(Dataset)
    sub.__dict__.update(tiny_dataset.__dict__)
    sub.train, sub.valid, sub.test = (
        m[:, keep].tocsr() for m in (tiny_dataset.train, tiny_dataset.valid, tiny_dataset.test)
    )
    sub.n_items = len(keep)
    expected = brute_force(sub, split, users, items[keep], 5)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-6), name


def test_bad_pools_are_clear_errors(tiny_dataset: Dataset) -> None:
    with pytest.raises(DataError, match="bool mask of shape"):
        Evaluator(tiny_dataset, "valid", items=np.ones(3, dtype=bool))
    with pytest.raises(DataError, match="holds no items"):
        Evaluator(tiny_dataset, "valid", items=np.zeros(tiny_dataset.n_items, dtype=bool))


def _with_cold_items(dataset: Dataset, cold: list[int]) -> Dataset:
    """``dataset`` with the ``cold`` items' training interactions moved to validation, and a
    random feature set ``f``."""
    moved = with_cold_items(dataset, cold)
    rng = np.random.default_rng(0)
    moved.add_feature_set(FeatureSet("f", {"v": rng.random((moved.n_items, 6), dtype=np.float32)}))
    return moved


@pytest.mark.parametrize("model", ["vbpr", "bpr"])
def test_trainer_places_cold_items_from_content_where_the_model_can(
    tiny_dataset: Dataset, tmp_path: Path, model: str
) -> None:
    """VBPR by its content part and by the map; BPR trained beside features by the map."""
    dataset = _with_cold_items(tiny_dataset, [0, 5, 10])
    assert dataset.cold_items().sum() == 3
    config = RunConfig(
        model=model,
        features="f",
        model_params={"embedding_size": 8},
        output_dir=str(tmp_path),
        name="run",
        train=TrainConfig(epochs=2, batch_size=64, ks=[5]),
    )
    result = train(config, dataset=dataset)
    with pytest.MonkeyPatch.context() as patch:  # the run's dataset is this one, not a path
        patch.setattr("lmmrec.training.run.load_dataset", lambda source: dataset)
        _, _, trainer = load_run(result.run_dir)
        from_disk = evaluate_run_pools(result.run_dir)
    results = trainer.evaluate_pools("valid")
    assert from_disk["valid"] == results  # the run directory's API: the best checkpoint's
    placements = ["content", "mapped"] if model == "vbpr" else ["mapped"]
    assert [(r.pool, r.scored_by) for r in results if r.pool != "warm"] == [
        (pool, by) for pool in ("all", "cold") for by in ["learned", *placements]
    ]
    assert next(r for r in results if r.pool == "cold").n_items == 3
    users, items = trainer.embed()
    feats = {"v": torch.from_numpy(dataset.feature_set("f").arrays["v"][[0, 5, 10]])}
    mapped = trainer.content_map()
    # validation holds the cold items' interactions: the penalty is chosen by them
    assert mapped.selected_by == "valid recall@20"
    assert mapped.scores[mapped.ridge] == max(mapped.scores.values())
    expected = {"mapped": mapped.head(feats)}
    if model == "vbpr":
        content = content_item_vectors(trainer.model, feats)
        assert content is not None
        expected = {"content": content} | expected
    ks = trainer.valid_evaluator.ks  # [5] and the selection metric's 20
    assert results == evaluate_pools(dataset, "valid", users, items, expected, ks=ks)


def test_without_cold_items_to_judge_by_the_map_is_chosen_by_leave_one_out(
    tiny_dataset: Dataset, tmp_path: Path
) -> None:
    dataset = _with_cold_items(tiny_dataset, [])
    config = RunConfig(
        model="bpr",
        features="f",
        model_params={"embedding_size": 8},
        output_dir=str(tmp_path),
        name="run",
        train=TrainConfig(epochs=1, batch_size=64, ks=[5]),
    )
    run_dir = train(config, dataset=dataset).run_dir
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("lmmrec.training.run.load_dataset", lambda source: dataset)
        trainer = load_run(run_dir)[2]
    assert not dataset.cold_items().any()
    mapped = trainer.content_map()
    assert mapped.selected_by == "leave-one-out error"
    assert mapped.scores[mapped.ridge] == min(mapped.scores.values())
    assert [r.scored_by for r in trainer.evaluate_pools("valid")] == ["learned", "learned"]
