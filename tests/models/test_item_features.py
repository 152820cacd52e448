"""The item-feature pieces of the multi-modal models: feature tables, row selections, the
linear map of concatenated modalities, and values memoised from frozen features."""

from __future__ import annotations

import torch

from lmmrec.models.item_features import (
    ConstantInputMemo,
    FeatureTables,
    ModalityLinear,
    RowSelection,
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


def _counting_memo() -> tuple[ConstantInputMemo, list[int]]:
    calls: list[int] = []

    def double(x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return x * 2

    return ConstantInputMemo(double), calls


def test_memo_reuses_the_value_for_the_same_unchanged_tensor():
    memo, calls = _counting_memo()
    x = torch.arange(3.0)
    first = memo(x)
    assert memo(x) is first and len(calls) == 1
    torch.testing.assert_close(first, torch.tensor([0.0, 2.0, 4.0]))


def test_memo_recomputes_after_an_in_place_change_or_for_another_tensor():
    memo, calls = _counting_memo()
    x = torch.arange(3.0)
    memo(x)
    x.add_(1)
    torch.testing.assert_close(memo(x), torch.tensor([2.0, 4.0, 6.0]))
    torch.testing.assert_close(memo(x.clone()), torch.tensor([2.0, 4.0, 6.0]))
    x.data = torch.zeros(3)  # new storage, same object and version counter
    torch.testing.assert_close(memo(x), torch.zeros(3))
    assert len(calls) == 4


def test_memo_never_keeps_inputs_that_take_gradients():
    memo, calls = _counting_memo()
    x = torch.arange(3.0, requires_grad=True)
    memo(x).sum().backward()
    memo(x)
    assert len(calls) == 2
    torch.testing.assert_close(x.grad, torch.full((3,), 2.0))


def test_memo_does_not_keep_values_computed_in_inference_mode():
    memo, calls = _counting_memo()
    x = torch.arange(3.0)
    with torch.inference_mode():
        memo(x)
    value = memo(x)  # usable by autograd, so computed again outside inference mode
    assert not value.is_inference() and len(calls) == 2
