"""The pieces shared by VBPR, LATTICE, FREEDOM and BM3."""

from __future__ import annotations

import torch

from lmmrec.data.sampling import Batch
from lmmrec.models.mm_layers import (
    BatchRandom,
    FeatureTables,
    ModalityLinear,
    RowSelection,
    dropout,
)


def _table(seed: int = 0) -> torch.Tensor:
    return torch.randn(6, 3, generator=torch.Generator().manual_seed(seed))


def test_residual_follows_the_trainable_table_step_by_step() -> None:
    """A zero residual trained by Adam equals training the feature table itself (MMRec)."""
    features = _table()
    table = torch.nn.Parameter(features.clone())  # MMRec: Embedding.from_pretrained(freeze=False)
    tables = FeatureTables({"image": 3}, 6, trainable=True)
    optimizers = [torch.optim.Adam(p, lr=0.1) for p in ([table], tables.parameters())]
    weight = torch.randn(3, 2)
    steps = [
        (torch.tensor([0, 2]), torch.tensor([1, 5])),
        (torch.tensor([3, 3]), torch.tensor([4, 0])),
    ]
    for plus, minus in steps * 3:
        select = RowSelection.differences(plus, minus, 6)
        outputs = [(table[plus] - table[minus]), tables({"image": features}, "image", select)]
        for optimizer, out in zip(optimizers, outputs, strict=True):
            optimizer.zero_grad(set_to_none=True)
            (out @ weight).tanh().sum().backward()
            optimizer.step()
        torch.testing.assert_close(features + tables.residual["image"], table.detach())
    assert not torch.equal(table.detach(), features)


def test_selections_match_indexing_forward_and_backward() -> None:
    features = _table().requires_grad_()
    plain = features.detach().clone().requires_grad_()
    tables = FeatureTables({"text": 3}, 6, trainable=False)
    assert list(tables.parameters()) == []
    items, other = torch.tensor([4, 1, 4]), torch.tensor([0, 2, 5])
    for select, expected in (
        (RowSelection.rows(items, 6), plain[items]),
        (RowSelection.differences(items, other, 6), plain[items] - plain[other]),
    ):
        out = tables({"text": features}, "text", select)
        torch.testing.assert_close(out, expected)
        weight = torch.randn_like(out)
        (out * weight).sum().backward()
        (expected * weight).sum().backward()
        torch.testing.assert_close(features.grad, plain.grad)
    torch.testing.assert_close(tables({"text": features}, "text"), features)


def test_modality_linear_is_a_linear_map_of_the_concatenation() -> None:
    layer = ModalityLinear({"image": 4, "text": 2}, 3, bias=True)
    torch.nn.init.normal_(layer.bias)
    x = {"image": torch.randn(5, 4), "text": torch.randn(5, 2)}
    weight = torch.cat([layer.weight["image"], layer.weight["text"]], dim=1)  # [3, 6]
    expected = torch.cat([x["image"], x["text"]], dim=1) @ weight.T + layer.bias
    torch.testing.assert_close(layer(x), expected)


def test_epoch_generator_depends_on_seed_and_epoch_only() -> None:
    torch.manual_seed(0)
    first = BatchRandom()
    torch.manual_seed(0)
    second = BatchRandom()  # another process of a data-parallel run, or a resumed one
    device = torch.device("cpu")
    draw = torch.rand(4, generator=first.epoch_generator(3, device))
    assert torch.equal(draw, torch.rand(4, generator=second.epoch_generator(3, device)))
    assert not torch.equal(draw, torch.rand(4, generator=first.epoch_generator(4, device)))


def test_batch_random_depends_on_seed_and_batch_only() -> None:
    batch = Batch(torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5]))
    other = Batch(torch.tensor([1, 0]), torch.tensor([2, 3]), torch.tensor([4, 5]))
    torch.manual_seed(0)
    first = BatchRandom()
    torch.manual_seed(0)
    second = BatchRandom()
    device = torch.device("cpu")
    draw = torch.rand(4, generator=first.generator(batch, device))
    torch.rand(100)  # other consumers of the global RNG change nothing
    assert torch.equal(draw, torch.rand(4, generator=second.generator(batch, device)))
    assert not torch.equal(draw, torch.rand(4, generator=first.generator(other, device)))


def test_dropout_zeroes_and_rescales() -> None:
    x = torch.ones(2000)
    out = dropout(x, 0.25, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.unique(), torch.tensor([0.0, 4 / 3]))
    assert abs((out == 0).float().mean().item() - 0.25) < 0.05
    assert dropout(x, 0.0, torch.Generator()) is x
