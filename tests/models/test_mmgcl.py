"""MMGCL: the edge-dropout view, the masked view's shortcut, the loss against a re-computation
with the same random draws, mask probabilities and any number of modalities."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from model_helpers import model_inputs
from model_helpers import random_features as _features
from pydantic import ValidationError

from lmmrec.data.dataset import Dataset
from lmmrec.data.sampling import Batch
from lmmrec.errors import ConfigError
from lmmrec.models.bipartite import BipartiteGraph
from lmmrec.models.graph import normalized_adjacency
from lmmrec.models.mmgcl import MMGCL, MMGCLConfig
from lmmrec.models.ops import info_nce
from lmmrec.runtime import seed_everything


def _model(train: sp.csr_matrix, dims: dict[str, int], **params: object) -> MMGCL:
    seed_everything(0)
    return MMGCL(MMGCLConfig(**params), model_inputs(train, dims))


def test_dropped_edges_are_renormalised_like_a_smaller_graph(tiny_dataset: Dataset) -> None:
    train = tiny_dataset.train
    graph = BipartiteGraph(train)
    keep = torch.from_numpy(np.random.default_rng(0).random(graph.n_edges) >= 0.3)
    dropped = sp.csr_matrix(
        (np.ones(int(keep.sum()), dtype=np.float32), (graph.users[keep], graph.items[keep])),
        shape=train.shape,
    )
    expected = normalized_adjacency(dropped).toarray()[: train.shape[0], train.shape[0] :]
    weights = graph.normalized_weights(keep)
    np.testing.assert_allclose(graph.to_users(weights).to_dense().numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(graph.to_items(weights).to_dense().numpy(), expected.T, rtol=1e-6)


def test_masked_branch_shortcut_equals_a_full_pass(tiny_dataset: Dataset) -> None:
    model = _model(tiny_dataset.train, {"image": 12, "text": 7}, embedding_size=8)
    encoder = model.encoder
    inputs = encoder.item_inputs(_features(tiny_dataset.n_items, {"image": 12, "text": 7}))
    inputs[2] = model.masks[1]  # text masked
    _, full = encoder.propagate(model.graph, model.weights, inputs)
    _, alone = encoder.propagate(model.graph, model.weights, [model.masks[1]])
    torch.testing.assert_close(alone[0], full[2])


def test_loss_matches_a_recomputation_with_the_same_draws(tiny_dataset: Dataset) -> None:
    dims = {"image": 12, "text": 7}
    model = _model(tiny_dataset.train, dims, embedding_size=8, ssl_alpha=0.5, edge_drop=0.25)
    feats = _features(tiny_dataset.n_items, dims)
    batch = Batch(torch.tensor([0, 5, 9]), torch.tensor([1, 2, 3]), torch.tensor([6, 7, 8]))
    got = model.loss(batch, feats)

    encoder, graph, config = model.encoder, model.graph, model.config
    generator = model.random.generator(batch, torch.device("cpu"))  # the loss's draws, in order
    order = torch.randperm(graph.n_edges, generator=generator)
    swap = 1 + int(torch.randint(2, (), generator=generator))
    masked = int(torch.multinomial(model.mask_p, 1, generator=generator))
    keep = torch.zeros(graph.n_edges, dtype=torch.bool)
    keep[order[: int(graph.n_edges * 0.75)]] = True

    def vectors(weights: torch.Tensor, inputs: list[torch.Tensor]):  # read-out of all rows
        users, items = encoder.propagate(graph, weights, inputs)
        return torch.cat(users, 1), torch.cat(items, 1)

    inputs = encoder.item_inputs(feats)
    users, items = vectors(model.weights, inputs)
    u, i = encoder.read(users, items)
    main = -F.logsigmoid(
        (u[batch.users] * i[batch.pos_items]).sum(1) - (u[batch.users] * i[batch.neg_items]).sum(1)
    ).mean()
    users_1, items_1 = vectors(graph.normalized_weights(keep), inputs)
    user_1 = encoder.read_user(users_1[batch.users])
    pos_1 = encoder.read_item(items_1[batch.pos_items])
    hard_rows = items_1[batch.pos_items].clone()
    columns = slice(swap * 8, (swap + 1) * 8)
    hard_rows[:, columns] = items_1[batch.neg_items][:, columns]  # one branch of the negative
    hard = encoder.read_item(hard_rows)
    masked_inputs = list(inputs)
    masked_inputs[1 + masked] = model.masks[masked]
    pos_2 = encoder.read_item(vectors(model.weights, masked_inputs)[1][batch.pos_items])
    anchor = F.normalize(user_1, dim=1)
    candidates = torch.cat([F.normalize(pos_1, dim=1), F.normalize(hard, dim=1)])
    first = F.cross_entropy(anchor @ candidates.T / config.ssl_temperature, torch.arange(3))
    second = info_nce(anchor, F.normalize(pos_2, dim=1), config.ssl_temperature)
    torch.testing.assert_close(got, main + 0.5 * (first + second))
    assert torch.equal(model.loss(batch, feats), got)  # the same batch draws the same views


def test_mask_probabilities(tiny_dataset: Dataset) -> None:
    default = _model(tiny_dataset.train, {"image": 4, "text": 3})
    torch.testing.assert_close(default.mask_p, torch.tensor([0.1, 0.9]))
    reordered = _model(tiny_dataset.train, {"text": 3, "image": 4})
    torch.testing.assert_close(reordered.mask_p, torch.tensor([0.9, 0.1]))  # by name
    uniform = _model(tiny_dataset.train, {"clip": 4}, mask_p=None)
    torch.testing.assert_close(uniform.mask_p, torch.tensor([1.0]))
    with pytest.raises(ConfigError, match="mask_p"):
        _model(tiny_dataset.train, {"clip": 4})
    with pytest.raises(ValidationError, match="mask_p"):
        MMGCLConfig(mask_p={"image": -0.1, "text": 1.0})


@pytest.mark.parametrize(
    "dims", [{"image": 6}, {"image": 6, "text": 5}, {"image": 6, "text": 5, "audio": 3}]
)
def test_any_number_of_modalities(tiny_dataset: Dataset, dims: dict[str, int]) -> None:
    model = _model(tiny_dataset.train, dims, embedding_size=8, mask_p=None)
    assert model.masks.shape == (len(dims), tiny_dataset.n_items, 8)
    feats = {m: t.requires_grad_() for m, t in _features(tiny_dataset.n_items, dims).items()}
    users, items = model.embed(feats)
    assert users.shape == (tiny_dataset.n_users, 8) and items.shape == (tiny_dataset.n_items, 8)
    batch = Batch(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 4]), torch.tensor([2, 3, 5]))
    model.loss(batch, feats).backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in feats.values())
