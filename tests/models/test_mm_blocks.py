import torch

from lmmrec.models.mm_blocks import ConstantInputMemo


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
