"""DualGNN: the forward pass against a dense re-computation, MMRec's neighbour-slot sampling,
per-epoch redraws and any number of modalities."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from model_helpers import model_inputs
from model_helpers import random_features as _features

from lmmrec.data.dataset import Dataset
from lmmrec.data.sampling import Batch, NegativeSampler
from lmmrec.models.dualgnn import DualGNN, DualGNNConfig
from lmmrec.models.graph import normalized_adjacency
from lmmrec.models.user_graph import co_occurrence_graph
from lmmrec.runtime import seed_everything


def _model(train: sp.csr_matrix, dims: dict[str, int], **params: int) -> DualGNN:
    seed_everything(0)
    return DualGNN(DualGNNConfig(**params), model_inputs(train, dims))


def test_embed_matches_a_dense_recomputation(tiny_dataset: Dataset) -> None:
    train, dims, k = tiny_dataset.train, {"image": 12, "text": 7}, 5
    model = _model(train, dims, n_neighbours=k)
    feats = _features(train.shape[1], dims)
    users, items = model.embed(feats)

    n_users = train.shape[0]
    adjacency = torch.from_numpy(normalized_adjacency(train).toarray())
    per_modality = []
    for m in dims:
        x = F.normalize(torch.cat([model.preferences[m], model.mlps[m](feats[m])]), dim=1)
        per_modality.append(x + adjacency @ x + adjacency @ adjacency @ x)  # Eq. 3
    alpha = model.modality_weights
    fused = sum(alpha[:, j : j + 1] * h[:n_users] for j, h in enumerate(per_modality))
    counts = torch.from_numpy(co_occurrence_graph(train, k).toarray())
    weights = torch.where(counts > 0, counts, -torch.inf).softmax(1).nan_to_num(0.0)  # Eq. 5
    torch.testing.assert_close(users, fused + weights @ fused)  # Eq. 6
    torch.testing.assert_close(items, sum(h[n_users:] for h in per_modality))


def _mmrec_urn(neighbours: list[int], k: int, rng: np.random.Generator) -> list[int]:
    """MMRec ``topk_sample``: append copies of random slots (copies included) up to k."""
    slots = list(neighbours)
    while len(slots) < k:
        slots.append(slots[rng.integers(len(slots))])
    return [slots.count(v) for v in neighbours]


def test_slot_counts_follow_mmrecs_urn() -> None:
    # user 0 co-occurs with users 1 (item 0) and 2 (item 1) only; k = 5 leaves 3 slots to fill
    dense = np.zeros((4, 3), dtype=np.float32)
    dense[0, [0, 1]] = dense[1, 0] = dense[2, 1] = dense[3, 2] = 1
    model = _model(sp.csr_matrix(dense), {"image": 3}, n_neighbours=5)
    assert model.graph_degree.tolist() == [2, 1, 1, 0]
    draws = 4000
    ours = np.array(
        [
            model._slot_counts(torch.Generator().manual_seed(s))[:2].tolist()  # user 0's entries
            for s in range(draws)
        ]
    )
    rng = np.random.default_rng(0)
    mmrec = np.array([_mmrec_urn([1, 2], 5, rng) for _ in range(draws)])
    assert (ours.sum(1) == 5).all()
    # both: the 3 extra slots split uniformly over (0, 3), (1, 2), (2, 1), (3, 0)
    for counts in (ours, mmrec):
        share = np.bincount(counts[:, 0].astype(int) - 1, minlength=4) / draws
        np.testing.assert_allclose(share, 0.25, atol=0.03)
    single = model._slot_counts(torch.Generator().manual_seed(0))
    assert single[2:].tolist() == [5.0, 5.0]  # one neighbour fills all k slots


def test_slots_are_redrawn_by_the_epoch_hook(tiny_dataset: Dataset) -> None:
    model = _model(tiny_dataset.train, {"image": 4}, n_neighbours=40)
    feats = _features(tiny_dataset.n_items, {"image": 4})
    sampler = NegativeSampler(tiny_dataset.train)
    n_train = tiny_dataset.train.nnz
    epoch = list(sampler.epoch(n_train // 2 + 1, np.random.default_rng(0)))
    assert len(epoch) == 2
    model.on_epoch_start(0)  # as the trainer does
    model.loss(epoch[0], feats)
    first = model.slots.clone()
    assert (first > 1).any()  # users with fewer than 40 neighbours fill copies
    model.loss(epoch[1], feats)
    assert torch.equal(model.slots, first)  # same epoch: same slots
    model.on_epoch_start(1)
    model.loss(next(sampler.epoch(n_train, np.random.default_rng(1))), feats)
    assert not torch.equal(model.slots, first)  # a new epoch: redrawn


@pytest.mark.parametrize(
    "dims", [{"image": 6}, {"image": 6, "text": 5}, {"image": 6, "text": 5, "audio": 3}]
)
def test_any_number_of_modalities(tiny_dataset: Dataset, dims: dict[str, int]) -> None:
    model = _model(tiny_dataset.train, dims)
    feats = {m: t.requires_grad_() for m, t in _features(tiny_dataset.n_items, dims).items()}
    users, items = model.embed(feats)
    assert users.shape == (tiny_dataset.n_users, 64) and items.shape == (tiny_dataset.n_items, 64)
    assert model.modality_weights.shape == (tiny_dataset.n_users, len(dims))
    batch = Batch(torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([2, 3]))
    model.loss(batch, feats).backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in feats.values())
