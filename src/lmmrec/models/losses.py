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


def squared_norm_penalty(*embeddings: torch.Tensor) -> torch.Tensor:
    r"""Squared L2 penalty :math:`\frac{1}{2B}\sum_m \lVert E_m \rVert_F^2` over a batch.

    The regulariser of LATTICE (Zhang et al., MM 2021; ``bpr_loss`` of its code and MMRec's) and
    the :math:`\lambda_\Theta \lVert\Theta\rVert^2` term of VBPR (He & McAuley, AAAI 2016, Eq. 7)
    restricted to the parameters a batch touches. ``B`` is the batch size (LATTICE's code divides
    by the configured batch size, which differs only for the last, smaller batch).

    Args:
        embeddings: ``[B, ...]`` tensors of one batch.
    """
    total = sum(e.pow(2).sum() for e in embeddings)
    return total / (2 * embeddings[0].shape[0])


def paired_square_penalty(
    table: torch.Tensor, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
) -> torch.Tensor:
    """MMGCN's and GRCN's ID regulariser in MMRec: the mean over ``[2B, D]`` of
    ``e_u^2 + e_i^2``, each user paired once with its positive and once with its negative item.

    Args:
        table: ``[N, D]`` node embeddings; ``users``, ``pos``, ``neg``: ``[B]`` row indices.
    """
    total = 2 * table[users].pow(2).sum() + table[pos].pow(2).sum() + table[neg].pow(2).sum()
    return total / (2 * len(users) * table.shape[1])
