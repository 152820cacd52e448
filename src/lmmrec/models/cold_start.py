"""Vectors for items nobody has interacted with yet, from their content alone.

A content model may define ``content_item_vectors(item_feats) -> [n, D]``: final item vectors
(the space ``embed`` returns them in, so that ``user_vecs @ vectors.T`` scores the new items)
built only from the ``n`` items' features ``{modality: [n, d_m]}``, with every ID-based part left
out. VBPR returns its projected features (``[0, W f + b]``), FREEDOM the mean of its feature
projections (trained by its feature BPR losses against the final user vectors), BM3 its online
view of the projected features through the predictor. Models without the method (BPR, LightGCN
and the other ID-based or graph-only models) cannot place a new item: :func:`content_item_vectors`
says so with ``None``. The same models fold that map into a self-contained
:class:`~lmmrec.models.content_head.ContentHead` (:func:`content_head`), which serving bundles
store.
"""

from __future__ import annotations

import torch

from lmmrec.models.base import ItemFeatures, Recommender
from lmmrec.models.content_head import ContentHead


def supports_cold_start(model: Recommender) -> bool:
    """Whether ``model`` can give vectors for items from their content alone."""
    return callable(getattr(model, "content_item_vectors", None))


def content_item_vectors(model: Recommender, item_feats: ItemFeatures) -> torch.Tensor | None:
    """``[n, D]`` float32 item vectors of ``n`` items from their features ``{modality: [n, d_m]}``
    (the modalities the model was trained with), or ``None`` when the model has no content part.
    """
    if not supports_cold_start(model):
        return None
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():  # plain tensors, usable with the caller's autograd tensors
            return model.content_item_vectors(item_feats).float()  # type: ignore[operator]
    finally:
        model.train(was_training)


def content_head(model: Recommender) -> ContentHead | None:
    """The model's cold-start map as a self-contained :class:`ContentHead` (what a serving
    bundle stores), or ``None`` for models without a content part."""
    if not callable(getattr(model, "content_head", None)):
        return None
    return model.content_head()  # type: ignore[operator]
