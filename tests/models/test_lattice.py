"""LATTICE against a dense re-computation of MMRec's formulas; the per-epoch graph schedule."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from model_helpers import DIMS, build_model
from model_helpers import batches as _batches
from model_helpers import random_features as _features

from lmmrec.data.dataset import Dataset
from lmmrec.models.graph import csr_pair
from lmmrec.models.losses import bpr_loss, squared_norm_penalty


def _model(dataset: Dataset, dims: dict[str, int] = DIMS, **params: object):
    return build_model(
        "lattice", dataset, dims, {"embedding_size": 8, "feat_embed_dim": 5, "knn_k": 4, **params}
    )


def _dense_knn(x: torch.Tensor, k: int) -> torch.Tensor:
    """MMRec ``build_sim`` + ``build_knn_neighbourhood``: weighted top-k of cosine similarity."""
    unit = x / x.norm(dim=1, keepdim=True)
    similarity = unit @ unit.T
    top = similarity.topk(k, dim=1)
    return torch.zeros_like(similarity).scatter_(1, top.indices, top.values)


def _laplacian(adjacency: torch.Tensor) -> torch.Tensor:
    """MMRec ``compute_normalized_laplacian``: D^-1/2 A D^-1/2 with row sums D."""
    inv = adjacency.sum(1).pow(-0.5)
    return inv[:, None] * adjacency * inv[None, :]


def _dense_item_graph(model, feats: dict) -> torch.Tensor:
    alpha = torch.softmax(model.modal_weight, 0)
    learned, initial = 0, 0
    for m, (name, projection) in enumerate(model.projections.items()):
        learned = learned + alpha[m] * _dense_knn(projection(feats[name]), 4)
        initial = initial + alpha[m] * _laplacian(_dense_knn(feats[name], 4))
    lam = model.config.lambda_coeff  # weight of the initial graphs
    return (1 - lam) * _laplacian(learned) + lam * initial


def test_item_graph_matches_mmrecs_dense_construction(tiny_dataset: Dataset) -> None:
    model = _model(tiny_dataset)
    with torch.no_grad():
        model.modal_weight.copy_(torch.tensor([0.3, -0.2]))  # unequal modality weights
    feats = _features(tiny_dataset.n_items)
    rows, cols, values = model._item_graph(feats)
    n = tiny_dataset.n_items
    got = csr_pair(rows, cols, values, (n, n))[0].to_dense()
    torch.testing.assert_close(got, _dense_item_graph(model, feats), rtol=1e-4, atol=1e-6)


def test_embed_is_lightgcn_with_self_loops_plus_the_normalised_item_convolution(
    tiny_dataset: Dataset,
) -> None:
    model = _model(tiny_dataset)
    feats = _features(tiny_dataset.n_items)
    users, items = model.embed(feats)
    r = torch.from_numpy(tiny_dataset.train.toarray())
    n_users = tiny_dataset.n_users
    a = torch.zeros(n_users + tiny_dataset.n_items, n_users + tiny_dataset.n_items)
    a[:n_users, n_users:], a[n_users:, :n_users] = r, r.T
    a = a + torch.eye(len(a))
    walk = a / a.sum(1, keepdim=True)  # MMRec normalized_adj_single(A + I): D^-1 (A + I)
    x0 = torch.cat([model.user_embedding, model.item_embedding])
    mean = (x0 + walk @ x0 + walk @ walk @ x0) / 3  # weight_size [64, 64]: 2 layers
    h = _dense_item_graph(model, feats) @ model.item_embedding
    torch.testing.assert_close(users, mean[:n_users], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(items, mean[n_users:] + F.normalize(h, dim=1), rtol=1e-4, atol=1e-5)


def test_loss_is_bpr_plus_squared_l2(tiny_dataset: Dataset) -> None:
    model = _model(tiny_dataset, reg_weight=0.2)
    feats = _features(tiny_dataset.n_items)
    batch = _batches(tiny_dataset)[0]
    loss = model.loss(batch, feats)  # first batch of an epoch: graph built from these weights
    users, items = model.embed(feats)
    user, pos, neg = users[batch.users], items[batch.pos_items], items[batch.neg_items]
    expected = bpr_loss((user * pos).sum(-1), (user * neg).sum(-1))
    expected = expected + 0.2 * squared_norm_penalty(user, pos, neg)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def test_learned_graph_is_built_with_gradients_once_per_epoch(tiny_dataset: Dataset) -> None:
    model = _model(tiny_dataset)
    feats = _features(tiny_dataset.n_items)
    batches = _batches(tiny_dataset)
    graph_parts = [*model.projections.parameters(), *model.features.parameters()]
    graph_parts.append(model.modal_weight)
    for step, batch in enumerate([*batches, batches[0]]):
        if step % len(batches) == 0:
            model.on_epoch_start(step // len(batches))  # as the trainer does
        model.zero_grad(set_to_none=True)
        model.loss(batch, feats).backward()
        first_of_epoch = step in (0, len(batches))
        assert all((p.grad is not None) == first_of_epoch for p in graph_parts), step
        assert model.user_embedding.grad is not None
