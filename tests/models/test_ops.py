import math

import pytest
import torch
import torch.nn.functional as F

from lmmrec.models.ops import info_nce, normalize_rows


def _grads(fn, *inputs: torch.Tensor, weight: torch.Tensor | None = None):
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    out = fn(*leaves)
    (out if weight is None else out * weight).sum().backward()
    return out.detach(), [x.grad for x in leaves]


def test_normalize_rows_matches_f_normalize_with_short_and_zero_rows():
    x = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x[2] = 0.0  # zero row: F.normalize leaves it zero, gradient g / eps
    x[4] *= 1e-3  # shorter than eps below: divided by eps, not by its norm
    weight = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for eps in (1e-12, 1e-2):
        ours, our_grad = _grads(lambda t, e=eps: normalize_rows(t, e), x, weight=weight)
        ref, ref_grad = _grads(lambda t, e=eps: F.normalize(t, dim=1, eps=e), x, weight=weight)
        torch.testing.assert_close(ours, ref)
        torch.testing.assert_close(our_grad[0], ref_grad[0])
    assert torch.allclose(ours[0].norm(), torch.tensor(1.0, dtype=torch.float64))


def test_normalize_rows_passes_gradcheck():
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(normalize_rows, (x,))


def _reference_info_nce(anchors, candidates, temperature):
    logits = (anchors / temperature) @ candidates.T
    return F.cross_entropy(logits, torch.arange(len(anchors)))


@pytest.mark.parametrize("n_candidates", [5, 9])  # in-batch only; with extra negatives
def test_info_nce_matches_cross_entropy(n_candidates: int):
    generator = torch.Generator().manual_seed(2)
    anchors = torch.randn(5, 4, dtype=torch.float64, generator=generator)
    candidates = torch.randn(n_candidates, 4, dtype=torch.float64, generator=generator)
    ours, our_grads = _grads(lambda a, c: info_nce(a, c, 0.3), anchors, candidates)
    ref, ref_grads = _grads(lambda a, c: _reference_info_nce(a, c, 0.3), anchors, candidates)
    torch.testing.assert_close(ours, ref.float())
    for got, want in zip(our_grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_info_nce_by_hand():
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    positives = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # logits / 0.5: row 0 (2, 2), label 0 -> log 2; row 1 (0, 2), label 1 -> log(1 + e^-2)
    expected = (math.log1p(math.exp(-2)) + math.log(2)) / 2
    assert info_nce(anchors, positives, 0.5).item() == pytest.approx(expected)


def test_info_nce_stays_finite_for_large_logits():
    anchors = torch.tensor([[100.0], [-100.0]])
    candidates = torch.tensor([[100.0], [-100.0]])
    loss, (grad_anchors, _) = _grads(lambda a, c: info_nce(a, c, 0.01), anchors, candidates)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(grad_anchors).all()


def test_info_nce_computes_in_float32_under_bf16_autocast():
    generator = torch.Generator().manual_seed(3)
    anchors = torch.randn(8, 4, generator=generator).requires_grad_()
    candidates = torch.randn(8, 4, generator=generator).bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = info_nce(anchors, candidates, 0.2)
    loss.backward()
    assert loss.dtype == torch.float32
    assert anchors.grad.dtype == torch.float32 and candidates.grad.dtype == torch.bfloat16
    ref = _reference_info_nce(anchors.detach(), candidates.detach().float(), 0.2)
    torch.testing.assert_close(loss.detach(), ref)
