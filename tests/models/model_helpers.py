"""Helpers shared by the model-specific tests: random features, a seeded model, batches."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from lmmrec.data.dataset import Dataset
from lmmrec.data.sampling import Batch, NegativeSampler
from lmmrec.models import ModelInputs, Recommender, build
from lmmrec.runtime import seed_everything

DIMS = {"image": 6, "text": 3}


def random_features(
    n_items: int, dims: dict[str, int] = DIMS, grad: bool = False
) -> dict[str, torch.Tensor]:
    """Seeded standard-normal features ``{modality: [I, d]}``."""
    gen = torch.Generator().manual_seed(0)
    return {m: torch.randn(n_items, d, generator=gen, requires_grad=grad) for m, d in dims.items()}


def model_inputs(train: sp.csr_matrix, dims: dict[str, int] = DIMS) -> ModelInputs:
    """What a model is built from: the ``[U, I]`` training matrix and :func:`random_features`."""
    return ModelInputs(*train.shape, train=train, item_feats=random_features(train.shape[1], dims))


def build_model(
    name: str, dataset: Dataset, dims: dict[str, int], params: dict[str, Any]
) -> Recommender:
    """Model ``name`` built with seed 0 on ``dataset`` and :func:`random_features` of ``dims``."""
    seed_everything(0)
    return build(name, params, model_inputs(dataset.train, dims))


def batches(dataset: Dataset, size: int = 64) -> list[Batch]:
    """One seeded epoch of training triples."""
    return list(NegativeSampler(dataset.train).epoch(size, np.random.default_rng(0)))


def assert_every_input_learns(
    model: Recommender, batch: Batch, feats: dict[str, torch.Tensor]
) -> None:
    """One backward pass reaches every parameter and every feature tensor with a non-zero
    gradient, and the scores stay finite."""
    model.loss(batch, feats).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    for modality, tensor in feats.items():
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0, modality
    users, items = model.embed(feats)
    assert torch.isfinite(users @ items.T).all()
