"""The item features a multi-modal recommender reads: which modalities it was built for, the
tables it reads them from (all rows, some rows or differences of rows, optionally fine-tuned as
the published models do), one linear map of the concatenated modalities, and values computed from
frozen features once.

Dimensions: I items, D output size, d_m size of modality m.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable

import torch
from torch import nn

from lmmrec.errors import FeatureError
from lmmrec.models.base import ItemFeatures, ModelInputs
from lmmrec.models.graph import csr_pair, sparse_matmul


def modality_dims(inputs: ModelInputs, model: str) -> dict[str, int]:
    """``{modality: d_m}`` of the features the model is built for; at least one is required."""
    if not inputs.item_feats:
        raise FeatureError(
            f"model {model!r} needs item features: give it at least one modality "
            "(features=NAME with a feature set of the dataset)"
        )
    return inputs.feature_dims


def check_features(item_feats: ItemFeatures, dims: dict[str, int], model: str) -> None:
    """Raise :class:`FeatureError` unless ``item_feats`` has the modalities and sizes ``dims``."""
    got = {m: int(t.shape[-1]) for m, t in item_feats.items()}
    if got != dims:
        raise FeatureError(
            f"model {model!r} was built for item features {dims} but was given {got}; "
            "pass the same modalities and sizes as at build time"
        )


class FeatureTables(nn.Module):
    """The item features a model reads: ``item_feats[m]``, plus a learned residual if trainable.

    MMRec's LATTICE, FREEDOM and BM3 hold the features as trainable tables
    (``nn.Embedding.from_pretrained(feat, freeze=False)``): Adam fine-tunes the raw vectors. Here
    the features stay an input (stored vectors or encoder outputs) and ``trainable=True`` adds a
    residual ``R_m [I, d_m]`` initialised to zero. ``F + R`` starts at ``F``, and Adam, whose
    steps depend on the gradients only, moves ``R`` exactly as it would move the table: the same
    optimisation path (with ``weight_decay`` > 0, MMRec's table decays towards zero, ``F + R``
    towards ``F``; MMRec's default is 0).

    Args:
        feature_dims: ``{modality: d_m}`` the model is built for.
        n_items: I.
        trainable: learn the residuals (the published behaviour).
    """

    def __init__(self, feature_dims: dict[str, int], n_items: int, trainable: bool) -> None:
        super().__init__()
        self.dims = dict(feature_dims)
        self.residual = nn.ParameterDict(
            {m: nn.Parameter(torch.zeros(n_items, d)) for m, d in self.dims.items()}
            if trainable
            else {}
        )

    def forward(
        self, item_feats: ItemFeatures, modality: str, select: RowSelection | None = None
    ) -> torch.Tensor:
        """``S (F_m + R_m)`` ``[n, d_m]`` for a selection ``S``, else ``F_m + R_m`` ``[I, d_m]``."""
        features = item_feats[modality]
        residual = self.residual.get(modality)
        if select is None:
            return features if residual is None else features + residual
        return _Select.apply(select.matrix, select.transpose, features.float(), residual)


class RowSelection:
    """A sparse ``[n, I]`` matrix ``S`` that picks item rows (``S_{j, items_j} = 1``) or
    differences of rows (``S_{j, a_j} = 1, S_{j, b_j} = -1``), with its transpose.

    ``S @ X`` reads only the selected rows, and the gradient ``S^T @ G`` is written in one pass
    into a fresh ``[I, d]`` tensor (an index's backward fills zeros, then scatters).
    """

    def __init__(
        self, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]
    ) -> None:
        self.matrix, self.transpose = csr_pair(rows, cols, values, shape)

    @classmethod
    def rows(cls, items: torch.Tensor, n_items: int) -> RowSelection:
        """Picks the rows ``items [n]``."""
        positions = torch.arange(len(items), device=items.device)
        ones = torch.ones(len(items), device=items.device)
        return cls(positions, items, ones, (len(items), n_items))

    @classmethod
    def differences(cls, plus: torch.Tensor, minus: torch.Tensor, n_items: int) -> RowSelection:
        """Row ``j`` is ``X[plus_j] - X[minus_j]``."""
        positions = torch.arange(len(plus), device=plus.device).repeat(2)
        signs = torch.ones(len(plus), device=plus.device)
        items, values = torch.cat([plus, minus]), torch.cat([signs, -signs])
        return cls(positions, items, values, (len(plus), n_items))


class _Select(torch.autograd.Function):
    """``S F + S R`` (``R`` optional) with the backward ``S^T G`` shared by ``F`` and ``R``."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        matrix: torch.Tensor,
        transpose: torch.Tensor,
        features: torch.Tensor,
        residual: torch.Tensor | None,
    ) -> torch.Tensor:
        ctx.transpose = transpose
        out = sparse_matmul(matrix, features)  # [n, d]
        return out if residual is None else torch.addmm(out, matrix, residual, out=out)

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[None, None, torch.Tensor | None, torch.Tensor | None]:
        _, _, needs_features, needs_residual = ctx.needs_input_grad
        if not (needs_features or needs_residual):
            return None, None, None, None
        full = sparse_matmul(ctx.transpose, grad.contiguous())  # [I, d]
        return None, None, full if needs_features else None, full if needs_residual else None


class ModalityLinear(nn.Module):
    """``[x_1, ..., x_M] W^T (+ b)`` for the concatenated modalities, computed as
    :math:`\\sum_m x_m W_m^T` so the ``[n, sum d_m]`` concatenation is never copied.

    The weights are initialised as one Xavier-normal ``[D, sum d_m]`` matrix (MMRec's
    ``xavier_normal_initialization``), the bias at zero.
    """

    def __init__(self, feature_dims: dict[str, int], out_features: int, bias: bool) -> None:
        super().__init__()
        std = math.sqrt(2.0 / (sum(feature_dims.values()) + out_features))
        self.weight = nn.ParameterDict(
            {m: nn.Parameter(torch.randn(out_features, d) * std) for m, d in feature_dims.items()}
        )
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """``{modality: [n, d_m]}`` -> ``[n, D]``."""
        out = sum(x @ self.weight[m].T for m, x in features.items())
        return out if self.bias is None else out + self.bias


class ConstantInputMemo:
    """``fn(x)``, remembered for an input that takes no gradient and reused while the same tensor
    comes back unmodified (same object, same in-place version counter).

    Frozen item features come back every training step; what depends on them alone (row norms)
    need not be recomputed. The storage address is compared too (``x.data = ...`` swaps it
    without an in-place version bump). Inputs that require gradients (end-to-end encoder
    outputs) are always recomputed, and values computed in inference mode are not kept
    (autograd could not save them for a later training step).
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.fn = fn
        self._input: weakref.ref[torch.Tensor] | None = None
        self._state: tuple[int, int] = (-1, 0)  # (version counter, storage address)
        self._value: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad or x.is_inference() or torch.is_inference_mode_enabled():
            return self.fn(x)
        state = (x._version, x.data_ptr())
        if self._input is None or self._input() is not x or self._state != state:
            with torch.no_grad():
                self._value = self.fn(x)
            self._input, self._state = weakref.ref(x), state
        return self._value
