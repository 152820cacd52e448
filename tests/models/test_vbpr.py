"""VBPR's two variants: hand-checkable scores, the loss, and any set of modalities."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_helpers import DIMS, assert_every_input_learns, build_model
from model_helpers import random_features as _features

from lmmrec.data.dataset import Dataset
from lmmrec.data.sampling import NegativeSampler
from lmmrec.errors import FeatureError
from lmmrec.models import ModelInputs, build
from lmmrec.models.losses import bpr_loss, embedding_norm_penalty, squared_norm_penalty


def _model(dataset: Dataset, dims: dict[str, int] = DIMS, **params: object):
    return build_model("vbpr", dataset, dims, {"embedding_size": 4, **params})


def _batch(dataset: Dataset):
    return next(NegativeSampler(dataset.train).epoch(32, np.random.default_rng(0)))


def _randomise(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()


def test_canonical_score_is_the_papers_predictor(tiny_dataset: Dataset) -> None:
    model = _model(tiny_dataset, variant="canonical")
    _randomise(model)  # beta_i, beta' start at zero: make every term count
    feats = _features(tiny_dataset.n_items, DIMS)
    users, items = model.embed(feats)
    assert users.shape == (tiny_dataset.n_users, 9) and items.shape == (tiny_dataset.n_items, 9)
    u, i = 3, 7
    f = torch.cat([feats[m][i] for m in model.content.weight])  # f_i, concatenated
    e = torch.cat([model.content.weight[m] for m in model.content.weight], dim=1)  # [D + 1, 9]
    gamma_u, theta_u = model.user_factors[u, :4], model.user_factors[u, 4:]
    expected = (
        model.item_bias[i]  # beta_i
        + gamma_u @ model.item_factors[i]  # gamma_u . gamma_i
        + theta_u @ (e[:4] @ f)  # theta_u . E f_i
        + e[4] @ f  # beta' . f_i
    )
    torch.testing.assert_close(users[u] @ items[i], expected)
    torch.testing.assert_close(model.score(torch.tensor([u]), feats)[0, i], expected)


def test_mmrec_vectors_are_id_and_projected_features(tiny_dataset: Dataset) -> None:
    model = _model(tiny_dataset)
    feats = _features(tiny_dataset.n_items, DIMS)
    users, items = model.embed(feats)
    assert users.shape == (tiny_dataset.n_users, 8) and items.shape == (tiny_dataset.n_items, 8)
    concat = torch.cat([feats[m] for m in model.content.weight], dim=1)  # [I, 9]
    weight = torch.cat([model.content.weight[m] for m in model.content.weight], dim=1)
    torch.testing.assert_close(items[:, :4], model.item_factors)
    torch.testing.assert_close(items[:, 4:], concat @ weight.T + model.content.bias)
    torch.testing.assert_close(users, model.user_factors)


@pytest.mark.parametrize("variant", ["mmrec", "canonical"])
def test_loss_is_bpr_plus_the_variants_regulariser(variant: str, tiny_dataset: Dataset) -> None:
    model = _model(tiny_dataset, variant=variant, reg_weight=0.5)
    _randomise(model)
    feats = _features(tiny_dataset.n_items, DIMS)
    batch = _batch(tiny_dataset)
    users, items = model.embed(feats)
    user, pos, neg = users[batch.users], items[batch.pos_items], items[batch.neg_items]
    ranking = bpr_loss((user * pos).sum(-1), (user * neg).sum(-1))
    if variant == "mmrec":
        reg = embedding_norm_penalty(user, pos, neg)
    else:
        reg = squared_norm_penalty(
            model.user_factors[batch.users],
            model.item_factors[batch.pos_items],
            model.item_factors[batch.neg_items],
            model.item_bias[batch.pos_items],
            model.item_bias[batch.neg_items],
        )
    torch.testing.assert_close(model.loss(batch, feats), ranking + 0.5 * reg)


@pytest.mark.parametrize("variant", ["mmrec", "canonical"])
@pytest.mark.parametrize(
    "dims", [{"image": 5}, {"text": 3, "image": 6}, {"clip": 4, "image": 2, "text": 3}]
)
def test_any_modalities_train_and_pass_gradients(
    variant: str, dims: dict[str, int], tiny_dataset: Dataset
) -> None:
    model = _model(tiny_dataset, dims, variant=variant)
    feats = _features(tiny_dataset.n_items, dims, grad=True)
    assert_every_input_learns(model, _batch(tiny_dataset), feats)


def test_features_must_match_the_build(tiny_dataset: Dataset) -> None:
    model = _model(tiny_dataset)
    with pytest.raises(FeatureError):  # other modalities than at build time
        model.embed(_features(tiny_dataset.n_items, {"image": 6}))
    with pytest.raises(FeatureError):  # no features at all
        build(
            "vbpr", {}, ModelInputs(tiny_dataset.n_users, tiny_dataset.n_items, tiny_dataset.train)
        )
