"""LightGCN: linear propagation on the user-item graph, layer outputs averaged.

He, Deng, Wang, Li, Zhang, Wang. "LightGCN: Simplifying and Powering Graph Convolution Network for
Recommendation." SIGIR 2020. Propagation Eq. 7 (matrix form) :math:`E^{(k+1)} = \\hat A E^{(k)}`,
final :math:`E = \\frac{1}{K+1}\\sum_{k=0}^{K} E^{(k)}` (Eq. 8, :math:`\\alpha_k = 1/(K+1)`).
The regulariser is on the layer-0 (ego) embeddings of the batch, as in the paper and MMRec.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from lmmrec.data.sampling import Batch
from lmmrec.models.base import ItemFeatures, ModelConfig, ModelInputs, Recommender
from lmmrec.models.graph import layer_sum, normalized_adjacency, to_torch_csr
from lmmrec.models.losses import bpr_loss, embedding_norm_penalty
from lmmrec.models.registry import register


class LightGCNConfig(ModelConfig):
    """LightGCN's hyper-parameters. ``n_layers`` 1 (the paper: 3) is the point with the best
    worst-case validation Recall@20 relative to BPR over ``configs/defaults-grid-demo.yaml`` (the
    demo shop) and ``configs/defaults.yaml`` (real Amazon Baby interactions), lr 1e-3, patience
    20: 3 layers stop at an early popularity peak on the demo shop (.1725 against BPR's .2524;
    epoch 2) and reach .0722 against .0593 on Baby; 1 layer reaches .2561 and .0703. On real
    Sports (``configs/defaults-sports.yaml``) the two tie: .0798 and .0797 against BPR's .0655
    (benchmarks/README.md, "The grids behind the defaults")."""

    embedding_size: int = Field(64, gt=0, description="D, size of the ego embeddings")
    n_layers: int = Field(
        1, ge=0, description="K, propagation layers (paper: 3; 1 selected, see above)"
    )
    reg_weight: float = Field(
        1e-4, ge=0, description="weight of the ego-embedding norm penalty (MMRec grid 1e-6 .. 1e-2)"
    )


@register
class LightGCN(Recommender):
    """Ego embeddings ``E0 [U + I, D]`` (users, then items) propagated K times over the normalised
    adjacency."""

    name = "lightgcn"
    config_class = LightGCNConfig
    config: LightGCNConfig

    def __init__(self, config: LightGCNConfig, inputs: ModelInputs) -> None:
        super().__init__(config, inputs)
        # users then items in one table: propagation needs them stacked, and one table spares a
        # concatenation per step and its backward
        self.ego = nn.Parameter(torch.empty(self.n_users + self.n_items, config.embedding_size))
        nn.init.xavier_uniform_(self.ego[: self.n_users])  # users [U, D]
        nn.init.xavier_uniform_(self.ego[self.n_users :])  # items [I, D]
        self.register_buffer(
            "adjacency", to_torch_csr(normalized_adjacency(inputs.train)), persistent=False
        )

    def _layer_sum(self) -> torch.Tensor:
        """``sum_k A^k E0`` ``[U + I, D]``, users first; Eq. 8 divides it by ``K + 1``, which the
        callers apply to the rows they use (a batch's rows in training)."""
        return layer_sum(self.adjacency, self.ego, self.config.n_layers)

    def embed(self, item_feats: ItemFeatures) -> tuple[torch.Tensor, torch.Tensor]:
        final = self._layer_sum() / (self.config.n_layers + 1)  # [U + I, D], Eq. 8
        return final[: self.n_users], final[self.n_users :]

    def loss(self, batch: Batch, item_feats: ItemFeatures) -> torch.Tensor:
        nodes = batch.node_rows(self.n_users)  # [3B]: users, positives, negatives
        rows = self._layer_sum().index_select(0, nodes) / (self.config.n_layers + 1)  # Eq. 8
        user, pos, neg = rows.chunk(3)  # [B, D] each
        ranking = bpr_loss((user * pos).sum(-1), (user * neg).sum(-1))
        ego = self.ego.index_select(0, nodes).chunk(3)
        return ranking + self.config.reg_weight * embedding_norm_penalty(*ego)
