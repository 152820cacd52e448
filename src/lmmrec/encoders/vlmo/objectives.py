"""VLMo pre-training objectives: image-text contrast, matching with hard negatives, masked LM.

Bao et al., NeurIPS 2022 (arXiv 2111.02358), section "Pre-Training Tasks", as the official code
computes them:

* ITC: symmetric InfoNCE (:func:`lmmrec.encoders.objectives.symmetric_contrastive_loss`, the
  one shared with CLIP and ``dual``) on the ITC embeddings, ``logits = exp(t) * v @ w^T``
  (B, B), averaged with the same loss on the VL-FFN-branch embeddings (scale ``exp(t_vl)``):
  ``0.5 * (CE(i2t) + CE(t2i)) / 2 + 0.5 * (CE_vl(i2t) + CE_vl(t2i)) / 2``;
* ITM: B matched pairs, plus for each text one image and for each image one text drawn from
  ``softmax(ITC logits)`` with the matched pair excluded; cross-entropy on ``itm_score(pooler)``
  with labels ``[1] * B + [0] * 2B``;
* MLM: cross-entropy on the masked text positions of the fusion pass, weighted by 0.25 in the
  image-text stage.

The official code all-gathers features across ranks before the ITC and the negative sampling; here
the candidates are the local batch (gathering is the trainer's job).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F

from lmmrec.encoders.objectives import symmetric_contrastive_loss
from lmmrec.encoders.vlmo.config import Head
from lmmrec.encoders.vlmo.model import VLMo
from lmmrec.errors import ConfigError

MLM_WEIGHT = 0.25  # weight of the MLM loss in image-text pre-training (official compute_mlm)


@dataclass(frozen=True)
class ContrastiveOutput:
    """loss (), i2t_logits (B, B) = t2i_logits^T, and the two scales exp(t), exp(t_vl)."""

    loss: torch.Tensor
    i2t_logits: torch.Tensor
    t2i_logits: torch.Tensor
    logit_scale: torch.Tensor
    logit_vl_scale: torch.Tensor


@dataclass(frozen=True)
class MatchingOutput:
    """loss (), logits (3B, 2) for [positives | negative images | negative texts], labels (3B)."""

    loss: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor


@dataclass(frozen=True)
class MaskedLMOutput:
    """loss (), logits (M, V) and labels (M) at the M masked positions (label != -100)."""

    loss: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor


def _require_heads(model: VLMo, *heads: Head) -> None:
    missing = [head for head in heads if head not in model.config.heads]
    if missing:
        raise ConfigError(
            f"this objective needs the VLMo heads {missing}; build the model with them in "
            f"config.heads (now {list(model.config.heads)})"
        )


def compute_itc(
    model: VLMo, image: torch.Tensor, text_ids: torch.Tensor, text_mask: torch.Tensor
) -> ContrastiveOutput:
    """Pre-training ITC over B aligned pairs: image (B, 3, S, S), text_ids / text_mask (B, Nt)."""
    _require_heads(model, "itc", "itc_vl")
    image_out = model.forward_image(image, vl_branch=True)
    text_out = model.forward_text(text_ids, text_mask, vl_branch=True)
    scale, vl_scale = model.logit_scale.exp(), model.logit_vl_scale.exp()
    loss, logits = symmetric_contrastive_loss(
        cast(torch.Tensor, image_out.cls_feats), cast(torch.Tensor, text_out.cls_feats), scale
    )
    vl_loss, _ = symmetric_contrastive_loss(
        cast(torch.Tensor, image_out.cls_vlffn_feats),
        cast(torch.Tensor, text_out.cls_vlffn_feats),
        vl_scale,
    )
    return ContrastiveOutput(
        loss=0.5 * (loss + vl_loss),
        i2t_logits=logits,
        t2i_logits=logits.t(),
        logit_scale=scale,
        logit_vl_scale=vl_scale,
    )


def sample_hard_negatives(
    similarity: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """For each row b of ``similarity`` (B, B), a column != b drawn from softmax(row).

    A row whose off-diagonal probabilities all underflow to 0 falls back to a uniform draw.
    """
    b = similarity.shape[0]
    if b < 2:
        raise ValueError("hard negatives need a batch of at least 2 pairs")
    off_diagonal = ~torch.eye(b, dtype=torch.bool, device=similarity.device)
    weights = F.softmax(similarity.detach().float(), dim=1) * off_diagonal
    weights = torch.where(weights.sum(1, keepdim=True) > 0, weights, off_diagonal.float())
    return torch.multinomial(weights, 1, generator=generator).squeeze(1)  # (B,)


def compute_itm(
    model: VLMo,
    image: torch.Tensor,
    text_ids: torch.Tensor,
    text_mask: torch.Tensor,
    i2t_logits: torch.Tensor,
    generator: torch.Generator | None = None,
) -> MatchingOutput:
    """ITM with ITC-sampled hard negatives; ``i2t_logits`` (B, B) from :func:`compute_itc`."""
    _require_heads(model, "itm")
    b = image.shape[0]
    with torch.no_grad():
        image_for_text = sample_hard_negatives(i2t_logits.t(), generator)  # (B,)
        text_for_image = sample_hard_negatives(i2t_logits, generator)  # (B,)
    fused = model.forward_image_text(
        torch.cat([text_ids, text_ids, text_ids[text_for_image]]),
        torch.cat([text_mask, text_mask, text_mask[text_for_image]]),
        torch.cat([image, image[image_for_text], image]),
    )
    logits = model.itm_score(fused.cls_feats)  # (3B, 2)
    labels = torch.cat([torch.ones(b), torch.zeros(2 * b)]).long().to(logits.device)
    return MatchingOutput(loss=F.cross_entropy(logits, labels), logits=logits, labels=labels)


def compute_mlm(
    model: VLMo,
    image: torch.Tensor,
    masked_text_ids: torch.Tensor,
    text_mask: torch.Tensor,
    labels: torch.Tensor,
    weight: float = MLM_WEIGHT,
) -> MaskedLMOutput:
    """MLM on the fusion pass. masked_text_ids, text_mask, labels (B, Nt); -100 = not masked.

    Logits are computed only at the masked positions (the loss is the same as on all positions).
    """
    _require_heads(model, "mlm")
    fused = model.forward_image_text(masked_text_ids, text_mask, image)
    masked = labels != -100  # (B, Nt)
    logits = model.mlm_score(fused.text_feats[masked])  # (M, V)
    return MaskedLMOutput(
        loss=weight * F.cross_entropy(logits, labels[masked]),
        logits=logits,
        labels=labels[masked],
    )


def mask_tokens(
    text_ids: torch.Tensor,
    text_mask: torch.Tensor,
    *,
    special_ids: list[int],
    mask_id: int,
    vocab_size: int,
    probability: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking of real, non-special tokens: (B, Nt) ids -> masked ids, labels (-100 = kept).

    Each candidate is chosen with ``probability``; a chosen token becomes [MASK] 80% of the time,
    a random token 10%, itself 10%. The official VLMo collator masks whole words
    (``DataCollatorForWholeWordMask``); this masks WordPiece tokens one by one.
    """
    shape, device = text_ids.shape, text_ids.device
    special = torch.tensor(special_ids, device=device)
    candidates = text_mask.bool() & ~torch.isin(text_ids, special)  # (B, Nt)
    chosen = candidates & (torch.rand(shape, generator=generator, device=device) < probability)
    labels = torch.where(chosen, text_ids, torch.full_like(text_ids, -100))
    draw = torch.rand(shape, generator=generator, device=device)
    random_ids = torch.randint(vocab_size, shape, generator=generator, device=device)
    masked = torch.where(chosen & (draw < 0.8), torch.full_like(text_ids, mask_id), text_ids)
    masked = torch.where(chosen & (draw >= 0.8) & (draw < 0.9), random_ids, masked)
    return masked, labels
