"""BPR-MF: matrix factorisation trained with Bayesian Personalised Ranking.

Rendle, Freudenthaler, Gantner, Schmidt-Thieme. "BPR: Bayesian Personalized Ranking from Implicit
Feedback." UAI 2009. Score :math:`\\hat y_{ui} = p_u^\\top q_i` (Eq. 11 with MF), loss Eq. 4 plus
MMRec's embedding-norm regulariser (``reg_weight``) so that MMRec's grids transfer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from lmmrec.data.sampling import Batch
from lmmrec.models.base import ItemFeatures, ModelConfig, ModelInputs, Recommender
from lmmrec.models.losses import bpr_loss, embedding_norm_penalty
from lmmrec.models.registry import register


class BPRConfig(ModelConfig):
    embedding_size: int = Field(
        64, gt=0, description="D, size of user and item factors (MMRec: 64)"
    )
    reg_weight: float = Field(
        0.1,
        ge=0,
        description="weight of the embedding-norm penalty (MMRec grid 1e-5 .. 2.0; 0.1 is best "
        "on Baby validation among {1e-5, 0.1}, benchmarks/README.md)",
    )


@register
class BPR(Recommender):
    """User factors ``P [U, D]`` and item factors ``Q [I, D]``, stacked in one ``[U + I, D]``
    table; ignores item features."""

    name = "bpr"
    config_class = BPRConfig
    config: BPRConfig

    def __init__(self, config: BPRConfig, inputs: ModelInputs) -> None:
        super().__init__(config, inputs)
        # one table: a batch's rows are gathered, and their gradient scattered, in one operation
        self.factors = nn.Parameter(torch.empty(self.n_users + self.n_items, config.embedding_size))
        nn.init.xavier_normal_(self.factors[: self.n_users])  # P [U, D]
        nn.init.xavier_normal_(self.factors[self.n_users :])  # Q [I, D]

    def loss(self, batch: Batch, item_feats: ItemFeatures) -> torch.Tensor:
        rows = F.embedding(batch.node_rows(self.n_users), self.factors)  # [3B, D]
        user, pos, neg = rows.chunk(3)  # [B, D] each
        ranking = bpr_loss((user * pos).sum(-1), (user * neg).sum(-1))
        return ranking + self.config.reg_weight * embedding_norm_penalty(user, pos, neg)

    def embed(self, item_feats: ItemFeatures) -> tuple[torch.Tensor, torch.Tensor]:
        return self.factors[: self.n_users], self.factors[self.n_users :]  # [U, D], [I, D]
