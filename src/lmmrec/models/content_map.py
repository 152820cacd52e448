"""New items for any model: a ridge map from item features to the item vectors the model learned.

A model's own content part (:mod:`lmmrec.models.cold_start`) places a new item by the weights its
loss trained, but on a scale nothing ties to its learned vectors': on the demo shop BM3's
content-only scores are 85 to 103 times its learned ones (a new item tops every list) and
FREEDOM's mostly negative (a new item never shows), and ID-only models (BPR, LightGCN) have no
content part at all. Following Gantner et al., "Learning Attribute-to-Feature Mappings for
Cold-Start Recommendations" (ICDM 2010), :func:`fit_ridge_path` instead regresses the learned
vectors of the items that have them on those items' features,

.. math:: \\min_{W, b} \\sum_{i \\in \\text{warm}} \\lVert v_i - W z_i - b \\rVert^2
   + \\lambda \\lVert W \\rVert^2, \\qquad z_i = (f_i - \\mu) / \\sigma,

with ``f_i`` the item's modalities side by side, standardised on the warm items, so that a new
item's vector :math:`W z + b` lives on the scale of the learned ones and any model trained beside
item features can place one. The penalty trades how far new items reach into the lists (small
:math:`\\lambda`) against how well they are ordered among themselves (large :math:`\\lambda`
shrinks them towards the mean item); each penalty's fit is a Cholesky solve with the warm items'
Gram matrix, and its leave-one-out error comes from the hat matrix's diagonal. The fit folds the
standardisation back in, so each penalty's map is an ordinary
:class:`~lmmrec.models.content_head.ContentHead` (what serving bundles store). Choosing the
penalty on validation rankings is the trainer's part (:meth:`lmmrec.training.Trainer.content_map`).

Shapes: n fitted items, d the features' total width (``sum d_m``), D the item vectors' width.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch

from lmmrec.errors import DataError
from lmmrec.models.base import ItemFeatures
from lmmrec.models.content_head import ContentHead

RIDGES = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)
"""The penalties tried by default: half decades over the range where, on the demo shop's
standardised MiniLM + EfficientNet features, the choice moves from the lists' reach to the
order among new items (benchmarks/README.md, "New items placed by a map")."""


class RidgePath:
    """Ridge fits of one regression for several penalties (made by :func:`fit_ridge_path`).

    Each penalty's map solves its normal equations by a Cholesky factorisation of the smaller
    Gram matrix (``d x d``, or ``n x n`` when there are fewer items than feature columns);
    :attr:`loo_error`, needed only when no validation ranking judges the maps, is computed on
    first use from one eigendecomposition of it. Tensors float64.
    """

    def __init__(
        self,
        ridges: tuple[float, ...],
        modalities: dict[str, int],
        z: torch.Tensor,
        targets: torch.Tensor,
        mean: torch.Tensor,
        scale: torch.Tensor,
    ) -> None:
        self.ridges = tuple(ridges)
        self._modalities = modalities  # {modality: d_m}, in column order
        self._z = z  # [n, d] standardised features
        self._target_mean = targets.mean(dim=0)  # [D]
        self._centred = targets - self._target_mean  # [n, D]
        self._mean, self._scale = mean, scale  # [d] each: how z was made from the features
        self._primal = z.shape[1] <= z.shape[0]
        self._gram = z.T @ z if self._primal else z @ z.T  # [d, d] or [n, n]

    def head(self, ridge: float) -> ContentHead:
        """The map for ``ridge`` as a :class:`ContentHead`: ``{m: [n, d_m]} -> [n, D]``."""
        eye = torch.eye(len(self._gram), dtype=self._gram.dtype)
        factor = torch.linalg.cholesky(self._gram + ridge * eye)
        if self._primal:  # (Z'Z + r I) W = Z'Y
            weight = torch.cholesky_solve(self._z.T @ self._centred, factor)  # [d, D]
        else:  # W = Z'(ZZ' + r I)^-1 Y
            weight = self._z.T @ torch.cholesky_solve(self._centred, factor)  # [d, D]
        weight = weight / self._scale[:, None]  # [d, D] on raw features
        bias = self._target_mean - self._mean @ weight  # [D]
        weights, start = {}, 0
        for modality, width in self._modalities.items():
            weights[modality] = weight[start : start + width].T.float()  # [D, d_m]
            start += width
        return ContentHead(weights, bias.float())

    @cached_property
    def loo_error(self) -> dict[float, float]:
        """Per penalty, the mean squared leave-one-out error per vector entry (the hat matrix's
        diagonal, from one eigendecomposition shared by the penalties)."""
        s2, vectors = torch.linalg.eigh(self._gram)
        keep = s2 > s2.max() * 1e-12
        s2, vectors = s2[keep], vectors[:, keep]  # [r], [d or n, r]
        p = self._z @ vectors if self._primal else vectors * s2.sqrt()  # [n, r] = U S
        p_t_y = p.T @ self._centred  # [r, D]
        errors = {}
        for ridge in self.ridges:
            fitted = (p / (s2 + ridge)) @ p_t_y  # [n, D]
            leverage = (p**2 / (s2 + ridge)).sum(dim=1).clamp(max=1 - 1e-9)  # [n]
            residual = (self._centred - fitted) / (1 - leverage)[:, None]  # [n, D]
            errors[ridge] = float((residual**2).mean())
        return errors


def fit_ridge_path(
    item_feats: ItemFeatures,
    targets: torch.Tensor,
    ridges: tuple[float, ...] = RIDGES,
) -> RidgePath:
    """Fit ``targets [n, D] ~ W z + b`` on ``item_feats {modality: [n, d_m]}`` for the penalties
    in ``ridges`` (module doc); float64 throughout.

    Raises:
        DataError: no features, fewer than two items, rows that disagree, or a penalty <= 0.
    """
    if not item_feats:
        raise DataError("a content map needs item features; train the model with a feature set")
    if any(ridge <= 0 for ridge in ridges):
        raise DataError(f"content map penalties must be positive, got {list(ridges)}")
    modalities = {m: int(f.shape[1]) for m, f in sorted(item_feats.items())}
    features = torch.cat([item_feats[m].double() for m in modalities], dim=1)  # [n, d]
    targets = targets.detach().double()  # [n, D]
    if len(features) != len(targets) or len(features) < 2:
        raise DataError(
            f"a content map needs two or more items with features and vectors, got "
            f"{len(features)} feature rows and {len(targets)} vectors"
        )
    mean = features.mean(dim=0)  # [d]
    scale = features.std(dim=0)  # [d]
    scale = torch.where(scale > 1e-8, scale, torch.ones_like(scale))
    z = (features - mean) / scale  # [n, d]
    return RidgePath(tuple(ridges), modalities, z, targets, mean, scale)


@dataclass
class ContentMap:
    """The map chosen for a trained model.

    Attributes:
        ridge: the chosen penalty.
        head: its map, ``{modality: [n, d_m]} -> [n, D]``.
        selected_by: what chose it (``"valid recall@20"``, higher is better, or
            ``"leave-one-out error"``, lower is better).
        scores: that criterion per penalty tried.
    """

    ridge: float
    head: ContentHead
    selected_by: str
    scores: dict[float, float]


def choose_content_map(
    path: RidgePath, score: Callable[[ContentHead], float] | None = None, name: str = "score"
) -> ContentMap:
    """The penalty of ``path`` whose map ``score`` rates highest (a validation metric with new
    items placed by it, named ``name``), or without ``score`` the one with the least
    leave-one-out error; ties go to the smaller penalty."""
    if score is None:
        scores = dict(path.loo_error)
        ridge = min(path.ridges, key=lambda r: (scores[r], r))
        return ContentMap(ridge, path.head(ridge), "leave-one-out error", scores)
    from tqdm.auto import tqdm

    heads, scores = {}, {}
    for ridge in tqdm(path.ridges, desc="content map penalties", leave=False, disable=None):
        heads[ridge] = path.head(ridge)
        scores[ridge] = float(score(heads[ridge]))
    ridge = max(path.ridges, key=lambda r: (scores[r], -r))
    return ContentMap(ridge, heads[ridge], name, scores)
