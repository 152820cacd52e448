"""Pieces shared by VBPR, LATTICE, FREEDOM and BM3 (the feature checks and the LightGCN read-out
come from :mod:`lmmrec.models.mm_blocks`).

Dimensions: I items, D output size, d_m size of modality m.

* :func:`id_embeddings`: the user and item ID tables (also of SLMRec's and MMGCL's encoder).
* :class:`FeatureTables`, :class:`RowSelection`: the item features a model reads (all rows, some
  rows or differences of rows), optionally fine-tuned as the published models do.
* :class:`ModalityLinear`: one linear map of the concatenated modalities, without materialising
  the concatenation.
* :class:`BatchRandom`, :func:`dropout`: random numbers that are a function of the model's seed
  and the batch (or the epoch).
"""

from __future__ import annotations

import hashlib
import math

import torch
from torch import nn

from lmmrec.data.sampling import Batch
from lmmrec.models.base import ItemFeatures
from lmmrec.models.graph import csr_pair, sparse_matmul


def id_embeddings(n_users: int, n_items: int, size: int) -> tuple[nn.Parameter, nn.Parameter]:
    """User and item ID embeddings ``[U, D]`` and ``[I, D]``, each Xavier-uniform initialised
    (MMRec's ``xavier_uniform_`` on its ``nn.Embedding`` weights), users drawn first."""
    users = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_users, size)))
    return users, nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_items, size)))


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


class BatchRandom:
    """Random numbers (dropout masks, edge samples) drawn from a generator seeded by the model's
    seed and the batch's content.

    A loss is then a function of the model, the batch and the features: calling it twice gives
    the same value, nothing depends on other consumers of the global RNG, and a resumed run draws
    what an uninterrupted one would. The seed is drawn from the global RNG when the model is
    built (so a seeded build reproduces it); every shuffled batch draws fresh numbers.
    """

    def __init__(self) -> None:
        self.seed = int(torch.randint(0, 2**62, ()))

    def generator(self, batch: Batch, device: torch.device) -> torch.Generator:
        digest = hashlib.blake2b(digest_size=8)
        for index in (batch.users, batch.pos_items, batch.neg_items):
            digest.update(index.cpu().numpy().tobytes())
        return self._generator(int.from_bytes(digest.digest(), "little"), device)

    def epoch_generator(self, epoch: int, device: torch.device) -> torch.Generator:
        """A generator for per-epoch draws (graph pruning, neighbour urns): the same on every
        process of a data-parallel run, and again after a resume."""
        digest = hashlib.blake2b(f"epoch {epoch}".encode(), digest_size=8).digest()
        return self._generator(int.from_bytes(digest, "little"), device)

    def _generator(self, salt: int, device: torch.device) -> torch.Generator:
        return torch.Generator(device=device).manual_seed((self.seed ^ salt) % 2**63)


def dropout(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Inverted dropout (``torch.nn.functional.dropout`` in training mode) drawing from
    ``generator`` (on ``x``'s device)."""
    if p <= 0:
        return x
    keep = torch.rand(x.shape, generator=generator, device=x.device) >= p
    return x * keep / (1 - p)
