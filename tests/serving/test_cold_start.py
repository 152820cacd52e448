"""Cold-start vectors: per content model, a catalogue item re-encoded as if new scores close to
what the model scores from that item's content; ID-only models say they cannot."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from lmmrec.data.dataset import Dataset
from lmmrec.models.cold_start import content_head, content_item_vectors, supports_cold_start
from lmmrec.models.content_head import ContentHead

sys.path.insert(0, str(Path(__file__).parents[1] / "models"))
from model_helpers import DIMS, batches, build_model, random_features

CONTENT_MODELS = [
    ("vbpr", {"variant": "mmrec"}),
    ("vbpr", {"variant": "canonical"}),
    ("freedom", {}),
    ("bm3", {}),
]


def _trained(name: str, params: dict[str, object], dataset: Dataset) -> torch.nn.Module:
    """The model after one seeded epoch of Adam, so that trainable feature tables have moved."""
    model = build_model(name, dataset, DIMS, {"embedding_size": 8, **params})
    feats = random_features(dataset.n_items)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for batch in batches(dataset):
        optimizer.zero_grad()
        model.loss(batch, feats).backward()
        optimizer.step()
    return model


@pytest.mark.parametrize(("name", "params"), CONTENT_MODELS)
def test_new_item_vectors_score_like_the_catalogue_content(
    name: str, params: dict[str, object], tiny_dataset: Dataset
) -> None:
    model = _trained(name, params, tiny_dataset)
    feats = random_features(tiny_dataset.n_items)
    assert supports_cold_start(model)
    with torch.no_grad():
        users, items = model.embed(feats)
        # the content the model reads for its catalogue items (features + trained residuals)
        catalogue = {m: model.features(feats, m) for m in feats}
    seen_content = content_item_vectors(model, catalogue)  # [I, D] what the model scores
    as_new = content_item_vectors(model, feats)  # [I, D] the same items, re-encoded as new
    assert as_new.shape == items.shape
    assert model.training  # the mode is restored
    expected, got = users @ seen_content.T, users @ as_new.T  # [U, I]
    assert torch.corrcoef(torch.stack([expected.flatten(), got.flatten()]))[0, 1] > 0.99
    assert (got - expected).abs().max() <= 0.1 * expected.abs().max()


@pytest.mark.parametrize("variant", ["mmrec", "canonical"])
def test_vbpr_content_vectors_are_its_score_without_the_id_factors(
    variant: str, tiny_dataset: Dataset
) -> None:
    model = _trained("vbpr", {"variant": variant}, tiny_dataset)
    feats = random_features(tiny_dataset.n_items)
    with torch.no_grad():
        users, items = model.embed(feats)
        id_part = users[:, :8] @ model.item_factors.T  # gamma_u . gamma_i  [U, I]
        if variant == "canonical":
            id_part = id_part + model.item_bias  # beta_i
    content = content_item_vectors(model, feats)
    torch.testing.assert_close(users @ content.T, users @ items.T - id_part)


@pytest.mark.parametrize(("name", "params"), CONTENT_MODELS)
def test_the_content_head_is_the_cold_start_map_alone(
    name: str, params: dict[str, object], tiny_dataset: Dataset
) -> None:
    model = _trained(name, params, tiny_dataset)
    feats = random_features(tiny_dataset.n_items)
    head = content_head(model)
    # rebuilt from its plain tensors alone: no model, no training data
    rebuilt = ContentHead.from_tensors({k: v.clone() for k, v in head.tensors().items()})
    assert rebuilt.dims == {m: t.shape[1] for m, t in feats.items()}
    with torch.no_grad():
        got = rebuilt(feats)
    want = content_item_vectors(model, feats)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert all(p.requires_grad is False for p in rebuilt.parameters())


@pytest.mark.parametrize("name", ["bpr", "lightgcn"])
def test_id_only_models_cannot_place_new_items(name: str, tiny_dataset: Dataset) -> None:
    model = build_model(name, tiny_dataset, {}, {"embedding_size": 8})
    assert not supports_cold_start(model)
    assert content_item_vectors(model, {}) is None
    assert content_head(model) is None
