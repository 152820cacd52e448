"""FREEDOM: the frozen item graph, degree-sensitive pruning once per epoch, the feature losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_helpers import DIMS, build_model
from model_helpers import batches as _batches
from model_helpers import random_features as _features

from lmmrec.data.dataset import Dataset
from lmmrec.models.freedom import modality_weights
from lmmrec.models.graph import normalized_adjacency
from lmmrec.models.losses import bpr_loss


def _model(dataset: Dataset, dims: dict[str, int] = DIMS, **params: object):
    return build_model("freedom", dataset, dims, {"embedding_size": 8, "knn_k": 4, **params})


def _dense_binary_knn(features: torch.Tensor, k: int) -> torch.Tensor:
    unit = torch.nn.functional.normalize(features, dim=1)
    top = (unit @ unit.T).topk(k, dim=1).indices
    return torch.zeros(len(features), len(features)).scatter_(1, top, 1.0 / k)


def test_modality_weights_generalise_mmrec() -> None:
    assert modality_weights(["image", "text"], 0.1) == {"image": 0.1, "text": 0.9}
    assert modality_weights(["image"], 0.1) == {"image": 1.0}
    assert modality_weights(["clip", "image", "text"], 0.1) == {
        "clip": 0.45,
        "image": 0.1,
        "text": 0.45,
    }
    assert modality_weights(["a", "b"], 0.1) == {"a": 0.5, "b": 0.5}


def test_frozen_graph_mixes_binary_knn_graphs(tiny_dataset: Dataset) -> None:
    model = _model(tiny_dataset)
    feats = _features(tiny_dataset.n_items)
    expected = 0.1 * _dense_binary_knn(feats["image"], 4) + 0.9 * _dense_binary_knn(
        feats["text"], 4
    )
    torch.testing.assert_close(model.item_graph.matrix.to_dense(), expected)
    torch.testing.assert_close(model.item_graph.transpose.to_dense(), expected.T)


def test_pruning_keeps_a_share_of_edges_renormalised_once_per_epoch(
    tiny_dataset: Dataset,
) -> None:
    model = _model(tiny_dataset, dropout=0.5)
    feats = _features(tiny_dataset.n_items)
    batches = _batches(tiny_dataset)
    graphs = []
    for step, batch in enumerate(batches + batches[:1]):  # an epoch, then the next one's first
        if step % len(batches) == 0:
            model.on_epoch_start(step // len(batches))  # as the trainer does
        model.loss(batch, feats)
        graphs.append(model._pruned)
    assert all(g is graphs[0] for g in graphs[: len(batches)])  # one graph per epoch
    assert graphs[-1] is not graphs[0]  # resampled when the next epoch starts
    pruned = graphs[0].to_dense()
    n_users = tiny_dataset.n_users
    kept = (pruned[:n_users, n_users:] > 0).numpy()
    assert kept.sum() == int(tiny_dataset.train.nnz * 0.5)
    assert not (kept & (tiny_dataset.train.toarray() == 0)).any()  # only training edges
    expected = normalized_adjacency(
        tiny_dataset.train.multiply(kept.astype(np.float32)).tocsr()
    ).toarray()
    np.testing.assert_allclose(pruned.numpy(), expected, rtol=1e-6)
    # evaluation uses the full graph, whatever the pruning
    fresh = _model(tiny_dataset, dropout=0.5)  # never pruned
    fresh.load_state_dict(model.state_dict())
    for x, y in zip(model.embed(feats), fresh.embed(feats), strict=True):
        torch.testing.assert_close(x, y)


def test_pruning_prefers_edges_of_low_degree_nodes(tiny_dataset: Dataset) -> None:
    model = _model(tiny_dataset, dropout=0.5)
    n_users = tiny_dataset.n_users
    coo = tiny_dataset.train.tocoo()
    counts = np.zeros(tiny_dataset.train.nnz)
    for seed in range(40):
        pruned = model._prune(torch.Generator().manual_seed(seed)).to_dense()
        counts += (pruned[:n_users, n_users:][coo.row, coo.col] > 0).numpy()
    weight = model._keep_weight.numpy()  # 1 / sqrt(d_u d_i), in the same (COO) edge order
    low_degree, high_degree = weight > np.median(weight), weight < np.median(weight)
    assert counts[low_degree].mean() > counts[high_degree].mean()


def test_loss_is_bpr_plus_feature_bprs(tiny_dataset: Dataset) -> None:
    model = _model(tiny_dataset, reg_weight=0.3)
    feats = _features(tiny_dataset.n_items)
    batch = _batches(tiny_dataset)[0]
    loss = model.loss(batch, feats)
    users, items = model._propagate(model._pruned)
    user = users[batch.users]
    expected = bpr_loss(
        (user * items[batch.pos_items]).sum(-1), (user * items[batch.neg_items]).sum(-1)
    )
    for modality, projection in model.projections.items():
        projected = projection(feats[modality])  # MMRec: W f for every item
        pos, neg = projected[batch.pos_items], projected[batch.neg_items]
        expected = expected + 0.3 * bpr_loss((user * pos).sum(-1), (user * neg).sum(-1))
    torch.testing.assert_close(loss, expected)


def test_item_vectors_add_the_item_graph_convolution(tiny_dataset: Dataset) -> None:
    model = _model(tiny_dataset, n_ui_layers=0)
    users, items = model.embed(_features(tiny_dataset.n_items))
    graph = model.item_graph.matrix.to_dense()
    torch.testing.assert_close(items, model.item_embedding + graph @ model.item_embedding)
    torch.testing.assert_close(users, model.user_embedding)


@pytest.mark.parametrize("train_features", [True, False])
def test_feature_gradients_reach_only_the_batch_items(
    train_features: bool, tiny_dataset: Dataset
) -> None:
    model = _model(tiny_dataset, DIMS, train_features=train_features)
    feats = _features(tiny_dataset.n_items, DIMS, grad=True)
    batch = _batches(tiny_dataset)[0]
    model.loss(batch, feats).backward()
    touched = torch.zeros(tiny_dataset.n_items, dtype=torch.bool)
    touched[batch.pos_items] = touched[batch.neg_items] = True
    for modality, tensor in feats.items():
        assert tensor.grad[~touched].abs().sum() == 0 and tensor.grad[touched].abs().sum() > 0
        if train_features:  # the residual's gradient is the features' gradient
            torch.testing.assert_close(model.features.residual[modality].grad, tensor.grad)
