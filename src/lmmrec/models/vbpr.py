"""VBPR: visual Bayesian personalised ranking, in the paper's form and in MMRec's.

He & McAuley. "VBPR: Visual Bayesian Personalized Ranking from Implicit Feedback." AAAI 2016.
``f_i`` is the concatenation of item ``i``'s modality vectors, any number of modalities of any
size. Dimensions: U users, I items, B batch, D ``embedding_size``, F = sum of feature sizes.

``variant="canonical"``, the paper's preference predictor (the global offset and the user bias
cancel in BPR): :math:`\\hat x_{ui} = \\beta_i + \\gamma_u^\\top\\gamma_i + \\theta_u^\\top
(E f_i) + \\beta'^\\top f_i`, i.e. item vector ``[gamma_i, E f_i, beta_i + beta' f_i]``
``[2D + 1]`` and user vector ``[gamma_u, theta_u, 1]``, ``E [D, F]``, ``beta' [F]``. Regulariser:
the paper's :math:`\\lambda_\\Theta` L2 on the factors and biases a batch touches (``E`` and
``beta'`` unregularised, Cornac's default).

``variant="mmrec"``, MMRec ``models/vbpr.py`` (the code the LMM paper ran): item vector
``[gamma_i, W f_i + b]`` ``[2D]``, user vector ``p_u [2D]``, no visual bias; regulariser MMRec's
``EmbLoss`` on the batch's final user and item vectors.

Both train with BPR-OPT. Only the content vectors of the batch's distinct items are projected
(MMRec projects all I items for every batch: the same numbers, 2-3x the work).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from lmmrec.data.sampling import Batch
from lmmrec.models.base import ItemFeatures, ModelConfig, ModelInputs, Recommender
from lmmrec.models.content_head import ContentHead
from lmmrec.models.item_features import (
    FeatureTables,
    ModalityLinear,
    RowSelection,
    check_features,
    modality_dims,
)
from lmmrec.models.losses import bpr_loss, embedding_norm_penalty, squared_norm_penalty
from lmmrec.models.registry import register


class VBPRConfig(ModelConfig):
    """VBPR's hyper-parameters. ``reg_weight`` 1.0 is the only value of MMRec's grid (plus 0.3,
    0.5) at or above BPR's validation Recall@20 on both grids that chose it, lr 1e-3, patience
    20: ``configs/defaults-grid-demo.yaml`` (the demo shop, real MiniLM + EfficientNet features:
    1e-5 .2997, 0.1 .3087, 0.3 .2917, 0.5 .2757, 1.0 .2556, 2.0 .2504; BPR .2524) and
    ``configs/defaults.yaml`` (real Amazon Baby interactions, noise features of MMRec's shapes:
    1e-5 .0230, 0.1 .0241, 0.3 .0531, 0.5 .0547, 1.0 .0626, 2.0 .0631, 5.0 .0084; BPR .0593).
    The old default 1e-5 overfits where features add little (38% of BPR on Baby; 26% below BPR
    on real Sports with MiniLM title features, issue 15); where features are informative a
    smaller value does better (0.1 on the demo shop). The Sports check
    (``configs/defaults-sports.yaml``, noise features) agrees: 0.1 .0551, 1.0 .0707, 2.0 .0033
    (collapses); BPR .0655. Over seeds 2022-2024 on Baby (``configs/defaults-baby-seeds.yaml``)
    1.0 gives validation .0633 +- .0012 against BPR's .0593 +- .0006, test Recall@20 +4.8%
    (significant after Holm) (benchmarks/README.md, "The grids behind the defaults")."""

    variant: Literal["mmrec", "canonical"] = Field(
        "mmrec",
        description="'mmrec': MMRec's VBPR, which the LMM paper used; 'canonical': the AAAI "
        "2016 model with visual bias beta' and item bias",
    )
    embedding_size: int = Field(
        64,
        gt=0,
        description="D: size of gamma and of the content factors (MMRec VBPR.yaml: 64; the LMM "
        "paper's configs: 128)",
    )
    reg_weight: float = Field(
        1.0,
        ge=0,
        description="regulariser weight (MMRec grid 2.0 .. 1e-5; 1.0 selected, see above; try "
        "0.1 with informative features)",
    )


@register
class VBPR(Recommender):
    """ID factors plus a linear map of the item's content features."""

    name = "vbpr"
    config_class = VBPRConfig
    needs_features = True
    config: VBPRConfig

    def __init__(self, config: VBPRConfig, inputs: ModelInputs) -> None:
        super().__init__(config, inputs)
        dims = modality_dims(inputs, self.name)
        size = config.embedding_size
        self.canonical = config.variant == "canonical"
        self.features = FeatureTables(dims, self.n_items, trainable=False)
        # canonical: gamma_u | theta_u; mmrec: p_u
        self.user_factors = nn.Parameter(torch.empty(self.n_users, 2 * size))  # [U, 2D]
        self.item_factors = nn.Parameter(torch.empty(self.n_items, size))  # gamma_i [I, D]
        nn.init.xavier_uniform_(self.user_factors)
        nn.init.xavier_uniform_(self.item_factors)
        if self.canonical:
            # rows 0..D-1 are E [D, sum d_m], row D is beta' (zero at start)
            self.content = ModalityLinear(dims, size + 1, bias=False)
            for weight in self.content.weight.values():
                nn.init.zeros_(weight[size])
            self.item_bias = nn.Parameter(torch.zeros(self.n_items))  # beta_i [I]
        else:
            self.content = ModalityLinear(dims, size, bias=True)  # W, b

    def _item_vectors(self, item_feats: ItemFeatures, items: torch.Tensor | None) -> torch.Tensor:
        """Final item vectors of ``items`` ``[n, 2D(+1)]`` (all items when ``None``)."""
        select = None if items is None else RowSelection.rows(items, self.n_items)
        features = {m: self.features(item_feats, m, select) for m in self.features.dims}
        content = self.content(features)  # [n, D(+1)]
        # gamma_i [n, D]
        gamma = self.item_factors if items is None else self.item_factors.index_select(0, items)
        if not self.canonical:
            return torch.cat([gamma, content], dim=1)  # [gamma_i, W f_i + b]
        size = self.config.embedding_size
        # beta_i [n]
        bias = self.item_bias if items is None else self.item_bias.index_select(0, items)
        visual_bias = content[:, size] + bias  # beta_i + beta' f_i
        return torch.cat([gamma, content[:, :size], visual_bias.unsqueeze(1)], dim=1)

    def _user_vectors(self, users: torch.Tensor | None) -> torch.Tensor:
        factors = (  # [n, 2D]
            self.user_factors if users is None else self.user_factors.index_select(0, users)
        )
        if not self.canonical:
            return factors
        return torch.cat([factors, factors.new_ones(factors.shape[0], 1)], dim=1)  # [.., 1]

    def embed(self, item_feats: ItemFeatures) -> tuple[torch.Tensor, torch.Tensor]:
        check_features(item_feats, self.features.dims, self.name)
        return self._user_vectors(None), self._item_vectors(item_feats, None)

    def content_item_vectors(self, item_feats: ItemFeatures) -> torch.Tensor:
        """Item vectors ``[n, 2D(+1)]`` from content alone (cold-start items, no ID factors):
        ``[0, W f + b]`` (mmrec) or ``[0, E f, beta' f]`` (canonical); ``item_feats`` holds the
        ``[n, d_m]`` features of the ``n`` items."""
        check_features(item_feats, self.features.dims, self.name)
        content = self.content({m: item_feats[m].float() for m in self.features.dims})
        gamma = content.new_zeros(content.shape[0], self.config.embedding_size)  # unknown: 0
        return torch.cat([gamma, content], dim=1)  # canonical: beta_i unknown, 0

    def content_head(self) -> ContentHead:
        """:meth:`content_item_vectors` as a self-contained affine map (serving bundles): the
        rows of the ID factors are zero, the others are ``W`` (``E`` and ``beta'``) and ``b``."""
        size = self.config.embedding_size
        weights = {
            m: torch.cat([w.new_zeros(size, w.shape[1]), w])  # [2D(+1), d_m]
            for m, w in self.content.weight.items()
        }
        bias = self.content.bias
        out = size + (size + 1 if self.canonical else size)
        folded = torch.zeros(out) if bias is None else torch.cat([bias.new_zeros(size), bias])
        return ContentHead(weights, folded)

    def loss(self, batch: Batch, item_feats: ItemFeatures) -> torch.Tensor:
        check_features(item_feats, self.features.dims, self.name)
        n = len(batch)
        items, inverse = torch.unique(
            torch.cat([batch.pos_items, batch.neg_items]), return_inverse=True
        )
        vectors = self._item_vectors(item_feats, items).index_select(0, inverse)  # [2B, 2D(+1)]
        pos, neg = vectors[:n], vectors[n:]
        user = self._user_vectors(batch.users)  # [B, 2D(+1)]
        ranking = bpr_loss((user * pos).sum(-1), (user * neg).sum(-1))  # BPR-OPT
        if not self.canonical:
            return ranking + self.config.reg_weight * embedding_norm_penalty(user, pos, neg)
        touched = (
            self.user_factors[batch.users],
            self.item_factors[batch.pos_items],
            self.item_factors[batch.neg_items],
            self.item_bias[batch.pos_items],
            self.item_bias[batch.neg_items],
        )
        return ranking + self.config.reg_weight * squared_norm_penalty(*touched)
