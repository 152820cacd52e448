"""Models that can train their feature tables (MMRec's trainable raw features: BM3, FREEDOM,
LATTICE): any set of modalities, with and without trainable tables, sends gradients everywhere."""

from __future__ import annotations

import pytest
from model_helpers import DIMS, assert_every_input_learns, batches, build_model, random_features

from lmmrec.data.dataset import Dataset

SMALL = {
    "bm3": {"embedding_size": 8},
    "freedom": {"embedding_size": 8, "knn_k": 4},
    "lattice": {"embedding_size": 8, "feat_embed_dim": 5, "knn_k": 4},
}


@pytest.mark.parametrize("name", list(SMALL))
@pytest.mark.parametrize("train_features", [True, False])
@pytest.mark.parametrize("dims", [{"text": 5}, DIMS, {"clip": 4, "image": 2, "text": 3}])
def test_any_modalities_and_feature_training(
    name: str, train_features: bool, dims: dict[str, int], tiny_dataset: Dataset
) -> None:
    params = {**SMALL[name], "train_features": train_features}
    model = build_model(name, tiny_dataset, dims, params)
    assert (len(model.features.residual) > 0) == train_features
    feats = random_features(tiny_dataset.n_items, dims, grad=True)
    assert_every_input_learns(model, batches(tiny_dataset)[0], feats)
