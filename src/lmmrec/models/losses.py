"""Losses shared by the recommenders (one definition each, never copied into a model)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    r"""Bayesian Personalised Ranking loss (Rendle et al., UAI 2009, Eq. 4).

    :math:`-\frac{1}{B}\sum_b \ln \sigma(\hat y_{u,i} - \hat y_{u,j})`, computed with
    ``logsigmoid`` so that large margins neither underflow nor need MMRec's ``1e-10`` guard.

    Args:
        pos_scores, neg_scores: ``[B]`` scores of the positive and the negative item.
    """
    return -F.logsigmoid(pos_scores - neg_scores).mean()


def embedding_norm_penalty(*embeddings: torch.Tensor) -> torch.Tensor:
    r"""MMRec's ``EmbLoss``: :math:`\frac{1}{B}\sum_m \lVert E_m \rVert_F` over a batch.

    The Frobenius norms are not squared (MMRec ``common/loss.py``); ``B`` is the batch size. Kept
    as is so that published ``reg_weight`` values mean the same here.

    Args:
        embeddings: ``[B, D]`` tensors (users, positive and negative items of one batch).
    """
    total = sum(torch.linalg.vector_norm(e) for e in embeddings)
    return total / embeddings[-1].shape[0]
