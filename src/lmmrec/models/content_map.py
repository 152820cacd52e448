"""New items for any model: a ridge map from item features to the item vectors the model learned.

A model's own content part (:mod:`lmmrec.models.cold_start`) places a new item by the weights its
loss trained, but on a scale nothing ties to its learned vectors': on the demo shop BM3's
content-only scores are about 100 times its learned ones (a new item tops every list) and
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
shrinks them towards the mean item); one SVD of the warm items' features gives the fit for every
penalty, with its leave-one-out error from the hat matrix's diagonal. The fit folds the
standardisation back in, so each penalty's map is an ordinary
:class:`~lmmrec.models.content_head.ContentHead` (what serving bundles store). Choosing the
penalty on validation rankings is the trainer's part (:meth:`lmmrec.training.Trainer.content_map`).

Shapes: n fitted items, d the features' total width (``sum d_m``), D the item vectors' width.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from lmmrec.errors import DataError
from lmmrec.models.base import ItemFeatures
from lmmrec.models.content_head import ContentHead

RIDGES = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)
"""The penalties tried by default: half decades over the range where, on the demo shop's
standardised MiniLM + EfficientNet features, the choice moves from the lists' reach to the
order among new items (benchmarks/README.md, "New items placed by a map")."""


@dataclass
class RidgePath:
    """Ridge fits of one regression for several penalties, from one SVD.

    Attributes:
        ridges: the penalties, as given.
        loo_error: per penalty, the mean squared leave-one-out error per vector entry.
    """

    ridges: tuple[float, ...]
    loo_error: dict[float, float]
    _modalities: dict[str, int]  # {modality: d_m}, in column order
    _mean: torch.Tensor  # [d] feature means of the fitted items
    _scale: torch.Tensor  # [d] their standard deviations (1 where a column is constant)
    _target_mean: torch.Tensor  # [D]
    _u_t_y: torch.Tensor  # [r, D] left singular vectors times the centred targets
    _s: torch.Tensor  # [r] singular values
    _v: torch.Tensor  # [d, r] right singular vectors

    def head(self, ridge: float) -> ContentHead:
        """The map for ``ridge`` as a :class:`ContentHead`: ``{m: [n, d_m]} -> [n, D]``."""
        shrink = self._s / (self._s**2 + ridge)  # [r]
        weight = (self._v * shrink) @ self._u_t_y  # [d, D] on standardised features
        weight = weight / self._scale[:, None]  # [d, D] on raw features
        bias = self._target_mean - self._mean @ weight  # [D]
        weights, start = {}, 0
        for modality, width in self._modalities.items():
            weights[modality] = weight[start : start + width].T.float()  # [D, d_m]
            start += width
        return ContentHead(weights, bias.float())


def fit_ridge_path(
    item_feats: ItemFeatures,
    targets: torch.Tensor,
    ridges: tuple[float, ...] = RIDGES,
) -> RidgePath:
    """Fit ``targets [n, D] ~ W z + b`` on ``item_feats {modality: [n, d_m]}`` for every penalty
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
    target_mean = targets.mean(dim=0)  # [D]
    centred = targets - target_mean  # [n, D]
    u, s, vt = torch.linalg.svd(z, full_matrices=False)  # [n, r], [r], [r, d]
    u_t_y = u.T @ centred  # [r, D]
    loo_error = {}
    for ridge in ridges:
        keep = s**2 / (s**2 + ridge)  # [r]
        fitted = u @ (keep[:, None] * u_t_y)  # [n, D]
        leverage = (u**2 * keep).sum(dim=1).clamp(max=1 - 1e-9)  # [n] hat-matrix diagonal
        residual = (centred - fitted) / (1 - leverage)[:, None]  # [n, D] leave-one-out
        loo_error[ridge] = float((residual**2).mean())
    return RidgePath(tuple(ridges), loo_error, modalities, mean, scale, target_mean, u_t_y, s, vt.T)


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
    heads = {ridge: path.head(ridge) for ridge in path.ridges}
    scores = {ridge: float(score(head)) for ridge, head in heads.items()}
    ridge = max(path.ridges, key=lambda r: (scores[r], -r))
    return ContentMap(ridge, heads[ridge], name, scores)
