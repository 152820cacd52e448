"""SLMRec: the shared-side branch propagation against dense LightGCN per branch, the FAC
spaces for one to three modalities, InfoNCE by hand and the loss against a re-computation."""

from __future__ import annotations

import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from model_helpers import model_inputs
from model_helpers import random_features as _features

from lmmrec.data.dataset import Dataset
from lmmrec.data.sampling import Batch
from lmmrec.models.graph import normalized_adjacency
from lmmrec.models.ops import info_nce
from lmmrec.models.slmrec import SLMRec, SLMRecConfig
from lmmrec.runtime import seed_everything


def _model(train: sp.csr_matrix, dims: dict[str, int], **params: object) -> SLMRec:
    seed_everything(0)
    return SLMRec(SLMRecConfig(**params), model_inputs(train, dims))


def _dense_branches(model: SLMRec, train: sp.csr_matrix, feats: dict[str, torch.Tensor]):
    """Each branch propagated on its own with the dense normalised adjacency (LightGCN Eq. 8)."""
    adjacency = torch.from_numpy(normalized_adjacency(train).toarray())
    encoder = model.encoder
    items = [encoder.item_embedding] + [
        encoder.projections[m](F.normalize(feats[m], dim=1)) for m in model.dims
    ]
    out = []
    for item_rows in items:
        x = layer = torch.cat([encoder.user_embedding, item_rows])
        for _ in range(model.config.n_layers):
            layer = adjacency @ layer
            x = x + layer
        out.append(x / (model.config.n_layers + 1))
    return out


@pytest.mark.parametrize("n_layers", [0, 1, 2, 3])
def test_branches_match_dense_lightgcn_per_branch(tiny_dataset: Dataset, n_layers: int) -> None:
    dims = {"image": 12, "text": 7}
    model = _model(tiny_dataset.train, dims, embedding_size=8, n_layers=n_layers)
    feats = _features(tiny_dataset.n_items, dims)
    users, items = model._encode(feats)
    expected = _dense_branches(model, tiny_dataset.train, feats)
    n_users = tiny_dataset.n_users
    for got_u, got_i, want in zip(users, items, expected, strict=True):
        torch.testing.assert_close(got_u, want[:n_users])
        torch.testing.assert_close(got_i, want[n_users:])
    user_vecs, item_vecs = model.embed(feats)
    torch.testing.assert_close(user_vecs, model.encoder.read_user(torch.cat(users, 1)))
    torch.testing.assert_close(item_vecs, model.encoder.read_item(torch.cat(items, 1)))


@pytest.mark.parametrize(
    ("dims", "spaces"),
    [
        ({"image": 6}, [16]),
        ({"image": 6, "text": 5}, [16, 8]),
        ({"image": 6, "text": 5, "audio": 3}, [16, 16, 8]),
    ],
)
def test_fac_spaces_for_any_number_of_modalities(
    tiny_dataset: Dataset, dims: dict[str, int], spaces: list[int]
) -> None:
    model = _model(tiny_dataset.train, dims, embedding_size=16)
    assert [layer.out_features for layer in model.chain] == spaces  # ID side: D ... D, D/2
    assert [layer.in_features for layer in model.chain] == [16, *spaces[:-1]]
    assert [layer.out_features for layer in model.heads] == spaces
    feats = {m: t.requires_grad_() for m, t in _features(tiny_dataset.n_items, dims).items()}
    users, items = model.embed(feats)
    assert users.shape == (tiny_dataset.n_users, 16) and items.shape == (tiny_dataset.n_items, 16)
    batch = Batch(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 4]), torch.tensor([2, 3, 5]))
    model.loss(batch, feats).backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in feats.values())


def test_loss_matches_a_recomputation(tiny_dataset: Dataset) -> None:
    dims = {"image": 12, "text": 7}
    model = _model(tiny_dataset.train, dims, embedding_size=8, ssl_alpha=0.3)
    feats = _features(tiny_dataset.n_items, dims)
    batch = Batch(
        torch.tensor([0, 5, 9, 12]), torch.tensor([1, 2, 3, 4]), torch.tensor([0, 0, 0, 0])
    )
    branches = _dense_branches(model, tiny_dataset.train, feats)
    n_users, config = tiny_dataset.n_users, model.config
    user = model.encoder.read_user(torch.cat([b[batch.users] for b in branches], 1))
    pos_rows = [b[n_users + batch.pos_items] for b in branches]
    pos = model.encoder.read_item(torch.cat(pos_rows, 1))
    main = info_nce(F.normalize(user, dim=1), F.normalize(pos, dim=1), config.temperature)
    # FAC: ID -> image space (8) -> text space (4)
    to_image, to_text = model.chain
    fac = info_nce(to_image(pos_rows[0]), model.heads[0](pos_rows[1]), config.ssl_temperature)
    fac = fac + info_nce(
        to_text(to_image(pos_rows[0])), model.heads[1](pos_rows[2]), config.ssl_temperature
    )
    torch.testing.assert_close(model.loss(batch, feats), main + 0.3 * fac)
