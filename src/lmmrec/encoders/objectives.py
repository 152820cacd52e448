"""Image-text objectives shared by every encoder: the contrastive loss and retrieval recall.

One home for the symmetric image-text contrastive loss (ITC; CLIP, Radford et al., ICML 2021,
arXiv 2103.00020, Fig. 3 pseudocode), used by CLIP and ``dual`` fine-tuning, by VLMo's
pre-training objectives (:mod:`lmmrec.encoders.vlmo.objectives`) and by the optional alignment
loss of end-to-end training:

* :func:`symmetric_contrastive_loss`: ``(CE(i2t) + CE(t2i)) / 2`` on ``scale * v @ w^T`` with
  the matched pairs on the diagonal, features used as given (VLMo's ITC, which must match
  Microsoft's outputs, passes its already normalised embeddings);
* :func:`contrastive_loss`: the same after L2-normalising both sides, with the scale
  ``exp(min(t, log 100))`` of a learnable log-temperature ``t`` (CLIP's ``logit_scale``, initialised
  at ``log(1 / 0.07)`` and kept at most ``log 100``);
* :func:`retrieval_recall`: image-to-text and text-to-image Recall@K of N aligned pairs, the
  held-out check that fine-tuning aligned the modalities.

Dimensions: B (or N) pairs, D embedding size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

INIT_LOGIT_SCALE = math.log(1 / 0.07)  # CLIP's initial temperature 0.07
MAX_LOGIT_SCALE = math.log(100.0)  # CLIP keeps the scale at most 100
RECALL_KS = (1, 5, 10)


def symmetric_contrastive_loss(
    image_feats: torch.Tensor, text_feats: torch.Tensor, scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(CE(i2t) + CE(t2i)) / 2 with the diagonal as targets. Features (B, D) -> loss, i2t (B, B).

    ``scale`` multiplies the raw products (no normalisation, no clamp here). The cross-entropies
    run in float32 even under bf16 autocast.
    """
    logits = scale * image_feats @ text_feats.t()  # (B, B)
    targets = torch.arange(logits.shape[0], device=logits.device)
    loss = F.cross_entropy(logits.float(), targets) + F.cross_entropy(logits.t().float(), targets)
    return loss / 2, logits


def logit_scale_value(log_scale: torch.Tensor) -> torch.Tensor:
    """``exp(min(t, log 100))``: the multiplier of the cosine similarities (at most 100)."""
    return log_scale.clamp(max=MAX_LOGIT_SCALE).exp()


def contrastive_loss(
    image: torch.Tensor, text: torch.Tensor, log_scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP's loss on B aligned pairs: image, text (B, D) -> loss (), i2t logits (B, B).

    Both sides are L2-normalised first; ``log_scale`` is the learnable log-temperature
    (:meth:`~lmmrec.encoders.base.ItemEncoder.contrastive_scale`), clamped at ``log 100``.
    """
    image = F.normalize(image.float(), dim=-1)  # (B, D)
    text = F.normalize(text.float(), dim=-1)  # (B, D)
    return symmetric_contrastive_loss(image, text, logit_scale_value(log_scale))


@torch.no_grad()
def retrieval_recall(
    image: torch.Tensor,
    text: torch.Tensor,
    ks: Sequence[int] = RECALL_KS,
    block: int = 4096,
) -> dict[str, float]:
    """Image->text and text->image Recall@K of N pairs (pair n = row n of both matrices).

    Args:
        image, text: (N, D) vectors of the same N items, compared by cosine similarity.
        ks: cut-offs.
        block: rows of the (N, N) similarity computed at a time (memory ``block * N``).

    Returns:
        ``{"i2t@K": ..., "t2i@K": ..., "mean_recall": ...}``: the share of images whose own text
        ranks within the top K texts (and the other way round), and the mean of all of them
        (R_sum / (2 |ks|)), the value fine-tuning selects on. A tie with another candidate
        counts against the pair, so an encoder that maps everything to one vector scores 0.

    .. math:: \\mathrm{R@K}_{i2t} = \\frac{1}{N} \\sum_n [\\,|\\{m : s(v_n, w_m) \\ge
              s(v_n, w_n)\\}| \\le K\\,]
    """
    if image.shape != text.shape or image.ndim != 2:
        raise ValueError(f"need two (N, D) matrices of one shape, got {image.shape}, {text.shape}")
    image = F.normalize(image.float(), dim=-1)
    text = F.normalize(text.float(), dim=-1)
    n = image.shape[0]
    ranks = {"i2t": [], "t2i": []}
    for start in range(0, n, block):
        rows = slice(start, min(start + block, n))
        for name, queries, keys in (("i2t", image, text), ("t2i", text, image)):
            similarity = queries[rows] @ keys.t()  # (b, N)
            # the block's own pairs sit at columns start..start+b: shift them onto the diagonal
            own = similarity[:, rows].diagonal().unsqueeze(1)  # (b, 1)
            ranks[name].append((similarity >= own).sum(dim=1) - 1)
    metrics: dict[str, float] = {}
    for name, parts in ranks.items():
        rank = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)
        for k in ks:
            metrics[f"{name}@{k}"] = float((rank < k).float().mean()) if n else 0.0
    metrics["mean_recall"] = sum(metrics.values()) / len(metrics) if metrics else 0.0
    return metrics
