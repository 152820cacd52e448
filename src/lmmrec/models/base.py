"""The recommender contract every model implements (``../docs/architecture.md``).

Dimensions: U users, I items, B batch size, D final vector size, d_m size of modality m.

* ``loss(batch, item_feats)`` -> scalar training loss for a :class:`~lmmrec.data.sampling.Batch`.
* ``embed(item_feats)`` -> ``(user_vecs [U, D], item_vecs [I, D])``: the final vectors whose inner
  product is the score (biases fold in as extra dimensions). Computed once per evaluation.
* ``score(users, item_feats)`` -> ``[len(users), I]``, derived here from ``embed``.
* ``on_epoch_start(epoch)``: called by the trainer before each training epoch's first step, on
  every process (MMRec's ``pre_epoch_processing``: FREEDOM's graph pruning, LATTICE's graph
  rebuild, DualGNN's neighbour draw); a no-op by default.

``item_feats`` maps a modality name (``"image"``, ``"text"``, a fused name) to ``[I, d_m]``; it is
empty for models that use no content. Models never load features themselves: the trainer passes
stored tensors (frozen / fine-tuned paradigms) or encoder outputs (end-to-end).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import scipy.sparse as sp
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from lmmrec.cache import DerivedCache
from lmmrec.data.sampling import Batch

ItemFeatures = dict[str, torch.Tensor]


class ModelConfig(BaseModel):
    """Base of every model's hyper-parameters; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class ModelInputs:
    """What a model may know about the data when it is built.

    Attributes:
        n_users, n_items: sizes.
        train: binary ``[U, I]`` CSR training matrix (graph models build their graphs from it).
        item_feats: the item features as they are at build time, ``{modality: [I, d_m]}``;
            models that precompute structure from content (item-item kNN graphs) read them here.
            During training the current features arrive through ``loss``/``embed``.
        train_hash: content hash of ``train`` (``Dataset.content_hash()``), for cache keys.
        cache: where derived structures are cached by content hash (see ``lmmrec.cache``).
    """

    n_users: int
    n_items: int
    train: sp.csr_matrix
    item_feats: ItemFeatures = field(default_factory=dict)
    train_hash: str = ""
    cache: DerivedCache = field(default_factory=lambda: DerivedCache(None))

    @property
    def feature_dims(self) -> dict[str, int]:
        """``{modality: d_m}`` of the item features the model will be given."""
        return {m: int(t.shape[1]) for m, t in self.item_feats.items()}


class Recommender(nn.Module, ABC):
    """Base class: subclasses set ``name``, ``config_class`` and implement ``loss`` and ``embed``.

    ``forward`` is the loss, so the model can be wrapped for data parallelism (DDP hooks run on
    ``forward``).
    """

    name: ClassVar[str]
    config_class: ClassVar[type[ModelConfig]]
    needs_features: ClassVar[bool] = False
    #: the learning rate a run of this model uses when it sets none (``TrainConfig.lr``'s 1e-3
    #: when None); a model's value is chosen by a grid and cited in its docstring
    default_lr: ClassVar[float | None] = None

    def __init__(self, config: ModelConfig, inputs: ModelInputs) -> None:
        super().__init__()
        self.config = config
        self.n_users = inputs.n_users
        self.n_items = inputs.n_items

    @abstractmethod
    def loss(self, batch: Batch, item_feats: ItemFeatures) -> torch.Tensor:
        """Scalar training loss of one batch."""

    @abstractmethod
    def embed(self, item_feats: ItemFeatures) -> tuple[torch.Tensor, torch.Tensor]:
        """Final ``(user_vecs [U, D], item_vecs [I, D])``; their inner product is the score."""

    def on_epoch_start(self, epoch: int) -> None:
        """Per-epoch work before epoch ``epoch``'s (0-based) first step; nothing by default."""

    def forward(self, batch: Batch, item_feats: ItemFeatures) -> torch.Tensor:
        return self.loss(batch, item_feats)

    def score(self, users: torch.Tensor, item_feats: ItemFeatures) -> torch.Tensor:
        """Scores ``[len(users), I]`` of the given users against every item."""
        user_vecs, item_vecs = self.embed(item_feats)
        return user_vecs[users] @ item_vecs.T
