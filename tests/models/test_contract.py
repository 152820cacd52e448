"""Every registered recommender passes the same contract (DESIGN.md: the inner-product contract)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from model_helpers import random_features

from lmmrec.data.dataset import Dataset
from lmmrec.data.sampling import NegativeSampler
from lmmrec.models import ModelInputs, build, names
from lmmrec.runtime import seed_everything

FEATURE_DIMS = {"image": 12, "text": 7}


def _inputs(dataset: Dataset) -> ModelInputs:
    return ModelInputs(
        n_users=dataset.n_users,
        n_items=dataset.n_items,
        train=dataset.train,
        item_feats=random_features(dataset.n_items, FEATURE_DIMS),
        train_hash=dataset.content_hash(),
    )


def _batch(dataset: Dataset, seed: int = 0):
    sampler = NegativeSampler(dataset.train)
    return next(sampler.epoch(64, np.random.default_rng(seed)))


def _model(name: str, dataset: Dataset, seed: int = 0):
    seed_everything(seed)
    return build(name, {}, _inputs(dataset))


@pytest.mark.parametrize("name", names())
def test_embed_and_score_shapes(name: str, tiny_dataset: Dataset) -> None:
    model = _model(name, tiny_dataset)
    feats = random_features(tiny_dataset.n_items, FEATURE_DIMS)
    users, items = model.embed(feats)
    assert users.shape[0] == tiny_dataset.n_users
    assert items.shape[0] == tiny_dataset.n_items
    assert users.shape[1] == items.shape[1]
    scores = model.score(torch.tensor([0, 3, 5]), feats)
    assert scores.shape == (3, tiny_dataset.n_items)
    assert torch.isfinite(scores).all()
    torch.testing.assert_close(scores, users[[0, 3, 5]] @ items.T)


@pytest.mark.parametrize("name", names())
def test_loss_decreases_and_every_parameter_gets_a_gradient(
    name: str, tiny_dataset: Dataset
) -> None:
    model = _model(name, tiny_dataset)
    feats = random_features(tiny_dataset.n_items, FEATURE_DIMS)
    batch = _batch(tiny_dataset)
    loss = model.loss(batch, feats)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, pname
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    first = loss.item()
    for _ in range(20):
        optimizer.zero_grad()
        loss = model.loss(batch, feats)
        loss.backward()
        optimizer.step()
    assert loss.item() < first


@pytest.mark.parametrize("name", names())
def test_gradients_reach_features_when_they_require_grad(name: str, tiny_dataset: Dataset) -> None:
    model = _model(name, tiny_dataset)
    if not model.needs_features:
        pytest.skip(f"{name} uses no item features")
    feats = random_features(tiny_dataset.n_items, FEATURE_DIMS, grad=True)
    model.loss(_batch(tiny_dataset), feats).backward()
    for modality, tensor in feats.items():
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0, modality


@pytest.mark.parametrize("name", names())
def test_same_seed_same_model_and_loss(name: str, tiny_dataset: Dataset) -> None:
    feats = random_features(tiny_dataset.n_items, FEATURE_DIMS)
    batch = _batch(tiny_dataset)
    a, b = _model(name, tiny_dataset, seed=5), _model(name, tiny_dataset, seed=5)
    assert torch.equal(a.loss(batch, feats), b.loss(batch, feats))
    c = _model(name, tiny_dataset, seed=6)
    assert not torch.equal(a.loss(batch, feats), c.loss(batch, feats))


@pytest.mark.parametrize("name", names())
def test_state_dict_round_trip(name: str, tiny_dataset: Dataset) -> None:
    feats = random_features(tiny_dataset.n_items, FEATURE_DIMS)
    a, b = _model(name, tiny_dataset, seed=1), _model(name, tiny_dataset, seed=2)
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b.load_state_dict(torch.load(buffer, weights_only=True))
    for x, y in zip(a.embed(feats), b.embed(feats), strict=True):
        torch.testing.assert_close(x, y)


@pytest.mark.parametrize("name", names())
def test_forward_is_the_loss(name: str, tiny_dataset: Dataset) -> None:
    model = _model(name, tiny_dataset)
    feats = random_features(tiny_dataset.n_items, FEATURE_DIMS)
    batch = _batch(tiny_dataset)
    assert torch.equal(model(batch, feats), model.loss(batch, feats))


@pytest.mark.parametrize("name", names())
def test_a_content_map_places_items_in_the_models_vector_space(
    name: str, tiny_dataset: Dataset
) -> None:
    """Every model, ID-only ones included, can place items from features by a ridge map fitted
    on its item vectors: one vector per item, the width of its item vectors, scored by its users."""
    from lmmrec.models.content_map import choose_content_map, fit_ridge_path

    model = _model(name, tiny_dataset)
    feats = random_features(tiny_dataset.n_items, FEATURE_DIMS)
    users, items = (v.detach() for v in model.embed(feats))
    warm = {m: f[:30] for m, f in feats.items()}
    mapped = choose_content_map(fit_ridge_path(warm, items[:30], (1.0, 100.0)))
    placed = mapped.head({m: f[30:] for m, f in feats.items()})
    assert placed.shape == (tiny_dataset.n_items - 30, items.shape[1])
    assert torch.isfinite(users @ placed.T).all()
