"""Fused autograd functions for two operations on the recommenders' hot paths.

Both compute exactly what their composite PyTorch spellings compute; they exist because those
spellings make many passes over large tensors:

* :func:`normalize_rows` is ``F.normalize(x, dim=1)``. Autograd's version backpropagates through
  the division by an expanded norm in about ten element-wise passes over ``[N, d]``; the fused
  backward takes three (``benchmarks/bench_ops.py``: about 3x faster for MMGCN's
  ``[19445, 384]`` user preferences).
* :func:`info_nce` is in-batch InfoNCE, ``F.cross_entropy((a / tau) @ p.T, arange(B))``
  (SLMRec, MMGCL). Cross-entropy's backward fills a ``[B, B]`` one-hot matrix and recomputes the
  softmax from the log-softmax; here the forward keeps the shifted exponentials and the backward
  scales them once.

Dimensions: N rows, d their width, B batch size, C vector size.
"""

from __future__ import annotations

import torch
from torch.autograd.function import FunctionCtx, once_differentiable


class _NormalizeRows(torch.autograd.Function):
    r""":math:`y = x / \max(\lVert x \rVert, \epsilon)` per row. Backward, per row:
    :math:`\nabla_x = (g - y \langle y, g \rangle) / \lVert x \rVert` on the sphere, and
    :math:`g / \epsilon` for rows shorter than :math:`\epsilon` (there ``y = x / \epsilon``)."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, eps: float) -> torch.Tensor:
        norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)  # [N, 1]
        inverse = norm.clamp_min(eps).reciprocal()
        y = x * inverse
        ctx.save_for_backward(y, inverse, norm > eps)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        y, inverse, on_sphere = ctx.saved_tensors
        dots = (y.unsqueeze(1) @ grad.unsqueeze(2)).squeeze(2) * on_sphere  # <y, g> [N, 1]
        return torch.addcmul(grad, y, dots, value=-1).mul_(inverse), None


def normalize_rows(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Every row of ``x [N, d]`` scaled to unit L2 norm (``F.normalize(x, dim=1)``)."""
    return _NormalizeRows.apply(x, eps)


class _InfoNCE(torch.autograd.Function):
    r"""Mean over b of :math:`\log \sum_c e^{s_{bc}} - s_{bb}`, :math:`s = a p^\top / \tau`
    ``[B, K]``, in float32 whatever the autocast state. The gradient of the logits is
    :math:`(\mathrm{softmax}(s) - [c = b]) / B`."""

    @staticmethod
    def forward(
        ctx: FunctionCtx, anchors: torch.Tensor, candidates: torch.Tensor, temperature: float
    ) -> torch.Tensor:
        ctx.dtypes = anchors.dtype, candidates.dtype
        ctx.temperature = temperature
        with torch.autocast(anchors.device.type, enabled=False):
            scaled = anchors.float() / temperature  # [B, C]; tau applied to the smaller side
            candidates = candidates.float()
            exps = scaled @ candidates.T  # logits [B, K], in place into shifted exponentials
            top = exps.amax(dim=1, keepdim=True)
            exps.sub_(top).exp_()
            total = exps.sum(dim=1, keepdim=True)  # [B, 1]
            positives = candidates[: len(scaled)]
            targets = (scaled.unsqueeze(1) @ positives.unsqueeze(2)).view(-1)  # s_bb [B]
            ctx.save_for_backward(scaled, candidates, exps, total)
            return (total.log() + top).view(-1).sub(targets).mean()

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        scaled, candidates, exps, total = ctx.saved_tensors
        step = grad.float() / len(exps)
        with torch.autocast(scaled.device.type, enabled=False):
            logits_grad = exps * (step / total)  # softmax / B, [B, K]
            logits_grad.diagonal().sub_(step)
            grad_anchors = (logits_grad @ candidates).div_(ctx.temperature)
            grad_candidates = logits_grad.T @ scaled
        anchors_dtype, candidates_dtype = ctx.dtypes
        return grad_anchors.to(anchors_dtype), grad_candidates.to(candidates_dtype), None


def info_nce(anchors: torch.Tensor, candidates: torch.Tensor, temperature: float) -> torch.Tensor:
    """In-batch InfoNCE (SLMRec, MMGCL): row b of ``anchors [B, C]`` must pick row b of
    ``candidates [K, C]`` (``K >= B``; rows past B are extra negatives) among all rows, with
    logits ``anchors @ candidates.T / temperature``."""
    return _InfoNCE.apply(anchors, candidates, temperature)
