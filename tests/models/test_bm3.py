"""BM3: no negatives, per-node dropout target views, the loss terms, any modalities."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from model_helpers import DIMS, build_model
from model_helpers import random_features as _features

from lmmrec.data.dataset import Dataset
from lmmrec.data.sampling import Batch, NegativeSampler
from lmmrec.models.losses import embedding_norm_penalty


def _model(dataset: Dataset, dims: dict[str, int] = DIMS, **params: object):
    return build_model("bm3", dataset, dims, {"embedding_size": 8, **params})


def _batch(dataset: Dataset) -> Batch:
    return next(NegativeSampler(dataset.train).epoch(64, np.random.default_rng(0)))


def test_negatives_are_ignored(tiny_dataset: Dataset) -> None:
    model = _model(tiny_dataset, dropout=0.0)  # dropout masks are keyed by the whole batch
    feats = _features(tiny_dataset.n_items)
    batch = _batch(tiny_dataset)
    other = Batch(batch.users, batch.pos_items, batch.neg_items.flip(0))
    assert torch.equal(model.loss(batch, feats), model.loss(other, feats))


def test_loss_without_dropout_is_the_papers_three_terms(tiny_dataset: Dataset) -> None:
    model = _model(tiny_dataset, dropout=0.0, reg_weight=0.3, cl_weight=2.0)
    feats = _features(tiny_dataset.n_items)
    batch = _batch(tiny_dataset)
    users, items = model._encode()
    predict = model.predictor

    def align(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return 1 - F.cosine_similarity(a, b, dim=-1).mean()

    u, i = users[batch.users], items[batch.pos_items]
    expected = align(predict(u), i) + align(predict(i), u)  # graph reconstruction
    expected = expected + 0.3 * embedding_norm_penalty(users, items)
    for modality, projection in model.projections.items():
        content = projection(feats[modality])[batch.pos_items]
        expected = expected + 2.0 * (align(predict(content), i) + align(predict(content), content))
    torch.testing.assert_close(model.loss(batch, feats), expected)


def test_target_views_drop_whole_nodes_consistently(tiny_dataset: Dataset) -> None:
    model = _model(tiny_dataset, dropout=0.5)
    nodes = torch.randn(10, 8)
    index = torch.tensor([3, 7, 3, 3, 1])
    target = model._target(nodes, index, torch.Generator().manual_seed(0))
    assert torch.equal(target[0], target[2]) and torch.equal(target[0], target[3])
    kept = target != 0
    torch.testing.assert_close(target[kept], (nodes[index] * 2)[kept])  # scaled by 1 / (1 - p)


def test_scores_are_predicted_vectors(tiny_dataset: Dataset) -> None:
    model = _model(tiny_dataset)
    feats = _features(tiny_dataset.n_items)
    users, items = model.embed(feats)
    encoded_users, encoded_items = model._encode()
    torch.testing.assert_close(users, model.predictor(encoded_users))
    torch.testing.assert_close(items, model.predictor(encoded_items))
