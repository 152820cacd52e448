"""MMGCN: the forward pass against a dense re-computation, projected and raw modalities, any
number of modalities."""

from __future__ import annotations

import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from model_helpers import model_inputs
from model_helpers import random_features as _features

from lmmrec.data.dataset import Dataset
from lmmrec.data.sampling import Batch
from lmmrec.models.mmgcn import MMGCN, MMGCNConfig
from lmmrec.runtime import seed_everything


def _model(train: sp.csr_matrix, dims: dict[str, int], **params: object) -> MMGCN:
    seed_everything(0)
    return MMGCN(MMGCNConfig(**params), model_inputs(train, dims))


@pytest.mark.parametrize("transpose", [False, True])  # more users than items, and fewer
def test_forward_matches_a_dense_recomputation(tiny_dataset: Dataset, transpose: bool) -> None:
    train, dims = tiny_dataset.train, {"image": 12, "text": 7}
    train = train.T.tocsr() if transpose else train
    model = _model(train, dims, embedding_size=8, latent_sizes={"image": 5}, n_layers=3)
    feats = _features(train.shape[1], dims)
    users, items = model.embed(feats)

    r = torch.from_numpy(train.toarray())
    n_users = r.shape[0]
    adjacency = torch.zeros(n_users + r.shape[1], n_users + r.shape[1])
    adjacency[:n_users, n_users:], adjacency[n_users:, :n_users] = r, r.T
    mean = adjacency / adjacency.sum(1, keepdim=True).clamp_min(1)  # D^-1 A: neighbour mean
    outputs = []
    for m, gcn in model.gcns.items():
        items_in = gcn.projection(feats[m]) if m == "image" else feats[m]
        x = F.normalize(torch.cat([gcn.preference, items_in]), dim=1)
        for conv, linear, combine in zip(gcn.convs, gcn.linears, gcn.combines, strict=True):
            h = F.leaky_relu(mean @ x @ conv)  # Eq. 1
            x_hat = F.leaky_relu(linear(x)) + model.id_embedding  # Eq. 5
            x = F.leaky_relu(combine(torch.cat([h, x_hat], dim=1)))
        outputs.append(x)
    expected = (outputs[0] + outputs[1]) / 2  # Eq. 8, the mean over modalities
    torch.testing.assert_close(users, expected[:n_users])
    torch.testing.assert_close(items, expected[n_users:])


def test_listed_modalities_are_projected_and_others_enter_raw(tiny_dataset: Dataset) -> None:
    model = _model(
        tiny_dataset.train, {"image": 12, "text": 7}, latent_sizes={"image": 5}, n_layers=3
    )
    image, text = model.gcns["image"], model.gcns["text"]
    assert image.projection.out_features == 5 and image.preference.shape[1] == 5
    assert image.convs[0].shape == (5, 5)
    assert text.projection is None and text.preference.shape[1] == 7  # MMRec: text at 384
    assert text.convs[0].shape == (7, 7) and text.convs[1].shape == (128, 128)
    assert len(image.convs) == 3  # n_layers


@pytest.mark.parametrize(
    "dims", [{"image": 6}, {"image": 6, "text": 5}, {"image": 6, "text": 5, "audio": 3}]
)
def test_any_number_of_modalities(tiny_dataset: Dataset, dims: dict[str, int]) -> None:
    model = _model(tiny_dataset.train, dims, embedding_size=8, learn_ids=True)
    assert list(model.gcns) == list(dims)
    feats = {m: t.requires_grad_() for m, t in _features(tiny_dataset.n_items, dims).items()}
    users, items = model.embed(feats)
    assert users.shape == (tiny_dataset.n_users, 8) and items.shape == (tiny_dataset.n_items, 8)
    batch = Batch(torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([2, 3]))
    model.loss(batch, feats).backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in feats.values())
    assert model.id_embedding.grad.abs().sum() > 0  # learned, unlike MMRec's plain tensor


def test_frozen_ids_reproduce_mmrecs_model(tiny_dataset: Dataset) -> None:
    dims = {"image": 6, "text": 5}
    learned = _model(tiny_dataset.train, dims, embedding_size=8, learn_ids=True)
    frozen = _model(tiny_dataset.train, dims, embedding_size=8, learn_ids=False)
    tables = ["id_embedding", "gcns.image.preference", "gcns.text.preference"]
    frozen_names = {name for name, _ in frozen.named_parameters()}
    assert frozen_names == {name for name, _ in learned.named_parameters()} - set(tables)
    state = {name: t.clone() for name, t in frozen.state_dict().items()}
    for name in tables:  # the same random draws, kept as saved constants
        torch.testing.assert_close(state[name], learned.state_dict()[name])

    feats = _features(tiny_dataset.n_items, dims)
    batch = Batch(torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([2, 3]))
    users, items = frozen.embed(feats)
    ranking = -F.logsigmoid((users[[0, 1]] * (items[[0, 1]] - items[[2, 3]])).sum(-1)).mean()
    loss = frozen.loss(batch, feats)
    torch.testing.assert_close(loss, ranking)  # no regulariser on constants
    loss.backward()
    torch.optim.Adam(frozen.parameters(), lr=0.1).step()
    for name in tables:
        assert torch.equal(frozen.state_dict()[name], state[name])
