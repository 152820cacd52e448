"""The content-only part of a content model, folded into one self-contained affine map.

Every content model's cold-start vector (``content_item_vectors``) is affine in the item's
features: VBPR's ``[0, W f + b]``, FREEDOM's mean of ``W_m f_m``, BM3's predictor applied twice
over the mean of ``W_m f_m + b_m``. A :class:`ContentHead` holds that map as one weight per
modality and one bias:

.. math:: v = \\sum_m W_m f_m + b, \\qquad W_m\\ [D, d_m],\\ b\\ [D]

so a serving bundle carries only the parameters the cold-start vectors use, rebuilt from plain
tensors (:meth:`ContentHead.from_tensors`) without the training data, the item graph or the ID
tables. Each content model returns its own with ``content_head()``; ``head(f)`` equals
``model.content_item_vectors(f)`` up to float rounding (the products are folded once).

Dimensions: n items, D final item vector size, d_m feature size of modality m.
"""

from __future__ import annotations

import torch
from torch import nn

from lmmrec.errors import DataError
from lmmrec.models.base import ItemFeatures

WEIGHT, BIAS = "weight.", "bias"


class ContentHead(nn.Module):
    """``{modality: [n, d_m]} -> [n, D]``: :math:`\\sum_m f_m W_m^T + b` (module doc).

    Args:
        weights: ``{modality: [D, d_m]}``.
        bias: ``[D]``.
    """

    def __init__(self, weights: dict[str, torch.Tensor], bias: torch.Tensor) -> None:
        super().__init__()
        if not weights:
            raise DataError("a content head needs the weight of at least one modality")
        self.modalities = sorted(weights)
        for modality in self.modalities:
            if weights[modality].ndim != 2 or weights[modality].shape[0] != bias.shape[0]:
                raise DataError(
                    f"content head: {modality} weight {tuple(weights[modality].shape)} does not "
                    f"map into the {bias.shape[0]}-d item space; export the bundle again"
                )
        self.weight = nn.ParameterDict(
            {
                m: nn.Parameter(w.detach().float().clone(), requires_grad=False)
                for m, w in weights.items()
            }
        )
        self.bias = nn.Parameter(bias.detach().float().clone(), requires_grad=False)

    @property
    def dims(self) -> dict[str, int]:
        """``{modality: d_m}`` of the features it reads."""
        return {m: int(self.weight[m].shape[1]) for m in self.modalities}

    @property
    def dim(self) -> int:
        """D, the size of the item vectors it makes."""
        return int(self.bias.shape[0])

    def forward(self, item_feats: ItemFeatures) -> torch.Tensor:
        """``{modality: [n, d_m]}`` -> ``[n, D]`` float32."""
        out = self.bias.expand(len(item_feats[self.modalities[0]]), -1)  # [n, D]
        for modality in self.modalities:
            out = out + item_feats[modality].float() @ self.weight[modality].T  # [n, D]
        return out

    def tensors(self) -> dict[str, torch.Tensor]:
        """Plain tensors (``weight.<modality>``, ``bias``) that :meth:`from_tensors` reads."""
        named = {WEIGHT + m: self.weight[m].detach().contiguous() for m in self.modalities}
        return named | {BIAS: self.bias.detach().contiguous()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> ContentHead:
        """The head :meth:`tensors` describes; :class:`DataError` when one is missing."""
        weights = {k[len(WEIGHT) :]: v for k, v in tensors.items() if k.startswith(WEIGHT)}
        if BIAS not in tensors or not weights:
            raise DataError(
                f"content head tensors {sorted(tensors)} lack {BIAS!r} or any {WEIGHT}<modality>;"
                " export the bundle again"
            )
        return cls(weights, tensors[BIAS])
