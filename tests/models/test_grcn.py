"""GRCN: segment softmax, edge-weighted messages and the whole forward pass against dense
re-computations; any number of modalities."""

from __future__ import annotations

import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from model_helpers import model_inputs
from model_helpers import random_features as _features

from lmmrec.data.dataset import Dataset
from lmmrec.data.sampling import Batch
from lmmrec.models.bipartite import BipartiteGraph
from lmmrec.models.grcn import GRCN, GRCNConfig, segment_softmax
from lmmrec.runtime import seed_everything


def _model(train: sp.csr_matrix, dims: dict[str, int], **params: int) -> GRCN:
    seed_everything(0)
    return GRCN(GRCNConfig(**params), model_inputs(train, dims))


def test_segment_softmax_matches_per_group_softmax() -> None:
    scores = torch.tensor([1.0, 2.0, 0.5, 3.0, -1.0, 100.0])
    groups = torch.tensor([0, 0, 2, 2, 2, 3])
    got = segment_softmax(scores, groups, 4)
    torch.testing.assert_close(got[:2], scores[:2].softmax(0))
    torch.testing.assert_close(got[2:5], scores[2:5].softmax(0))
    assert got[5] == 1.0  # a single edge, and no overflow at a large score


def test_edge_messages_forward_and_backward_match_dense(tiny_dataset: Dataset) -> None:
    train = tiny_dataset.train
    graph = BipartiteGraph(train)
    gen = torch.Generator().manual_seed(0)
    weights = torch.rand(graph.n_edges, generator=gen, requires_grad=True)
    items = torch.randn(tiny_dataset.n_items, 3, generator=gen, requires_grad=True)
    users = torch.randn(tiny_dataset.n_users, 3, generator=gen, requires_grad=True)
    for into, source in (("users", items), ("items", users)):
        dense = torch.zeros(train.shape).index_put((graph.users, graph.items), weights)  # [U, I]
        matrix = dense if into == "users" else dense.T
        target = torch.randn(matrix.shape[0], 3, generator=gen)
        got = graph.message(into, weights, source)
        torch.testing.assert_close(got, matrix @ source)
        expected = torch.autograd.grad((matrix @ source * target).sum(), (weights, source))
        got_grads = torch.autograd.grad((got * target).sum(), (weights, source))
        torch.testing.assert_close(got_grads, expected)


def _dense_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.where(mask, scores, -torch.inf).softmax(dim).nan_to_num(0.0)


@pytest.mark.parametrize("n_routing", [0, 3])
def test_forward_matches_a_dense_recomputation(tiny_dataset: Dataset, n_routing: int) -> None:
    train, dims = tiny_dataset.train, {"image": 12, "text": 7}
    model = _model(train, dims, n_routing=n_routing)
    feats = _features(tiny_dataset.n_items, dims)
    users, items = model.embed(feats)

    n_users = tiny_dataset.n_users
    mask = torch.from_numpy(train.toarray() > 0)  # [U, I]
    contents, attention_items, attention_users = [], [], []
    for m in dims:
        f = F.normalize(F.leaky_relu(model.projections[m](feats[m])), dim=1)
        p = F.normalize(model.preferences[m], dim=1)
        for _ in range(n_routing):  # users gather their items' content (Eq. 2-3)
            p = F.normalize(p + _dense_softmax(p @ f.T, mask, 1) @ f, dim=1)
        to_users, to_items = _dense_softmax(p @ f.T, mask, 1), _dense_softmax(p @ f.T, mask, 0)
        contents.append(torch.cat([p + to_users @ f, f + to_items.T @ p]))
        attention_users.append(to_users)
        attention_items.append(to_items)
    conf = model.confidence
    # w into item i from user u: alpha^{->i}_{ui} * confidence of u; into u: alpha^{->u} * conf(i)
    w_items = F.relu(
        torch.stack([a * conf[:n_users, j : j + 1] for j, a in enumerate(attention_items)]).amax(0)
    )
    w_users = F.relu(
        torch.stack([a * conf[n_users:, j][None] for j, a in enumerate(attention_users)]).amax(0)
    )
    x = F.normalize(model.id_embedding, dim=1)
    total = x
    for _ in range(2):
        x = torch.cat([w_users @ x[n_users:], w_items.T @ x[:n_users]])
        total = total + x
    expected = torch.cat([total, *contents], dim=1)
    torch.testing.assert_close(users, expected[:n_users])
    torch.testing.assert_close(items, expected[n_users:])


@pytest.mark.parametrize(
    "dims", [{"image": 6}, {"image": 6, "text": 5}, {"image": 6, "text": 5, "audio": 3}]
)
def test_any_number_of_modalities(tiny_dataset: Dataset, dims: dict[str, int]) -> None:
    model = _model(tiny_dataset.train, dims, embedding_size=8, latent_size=4)
    feats = {m: t.requires_grad_() for m, t in _features(tiny_dataset.n_items, dims).items()}
    users, items = model.embed(feats)
    assert users.shape == (tiny_dataset.n_users, 8 + 4 * len(dims))  # [h | c^1 .. c^M]
    assert items.shape == (tiny_dataset.n_items, 8 + 4 * len(dims))
    batch = Batch(torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([2, 3]))
    model.loss(batch, feats).backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in feats.values())
    assert model.confidence.grad.abs().sum() > 0  # pruning weights are learned
