"""Where a training step's item features come from: the one place the paradigms differ.

The trainer never asks which paradigm it runs (``../../docs/paradigms.md``). It holds a
:class:`StepModule`, an ``nn.Module`` whose ``forward(batch)`` is the loss (so data parallelism
wraps all of it), which hands the optimiser its parameter groups and gives the item features of
each evaluation:

* :class:`StoredFeatures` (frozen and fine-tuned paradigms): stored ``[I, d_m]`` tensors, passed
  to the recommender unchanged;
* :class:`lmmrec.training.end2end.EndToEnd` (end-to-end): encoder + feature bank + recommender.

Epoch and step hooks are called by the trainer on every process, so what a model or a bank does
"once per epoch" stays right under DDP (no model counts triples to discover epochs).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn

from lmmrec.data.sampling import Batch
from lmmrec.models.base import ItemFeatures, Recommender


class StepModule(nn.Module, ABC):
    """A recommender plus the source of its item features.

    Attributes:
        recommender: the model being trained; its ``embed`` gives the evaluation's vectors.
    """

    recommender: Recommender

    @abstractmethod
    def forward(self, batch: Batch) -> torch.Tensor:
        """The scalar training loss of ``batch``."""

    @abstractmethod
    def item_features(self) -> ItemFeatures:
        """Every item's features ``{modality: [I, d_m]}`` as they are now, for evaluation (the
        caller disables gradients)."""

    def param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """Optimiser parameter groups; the recommender's train at ``lr`` / ``weight_decay``.

        A group may carry ``warmup_epochs`` (linear warm-up of its learning rate)."""
        return [
            {"params": list(self.recommender.parameters()), "lr": lr, "weight_decay": weight_decay}
        ]

    def on_epoch_start(self, epoch: int) -> None:
        """Called before the first step of epoch ``epoch`` (0-based) on every process."""
        self.recommender.on_epoch_start(epoch)

    def on_step_end(self, step: int) -> None:
        """Called after optimiser step ``step`` (1-based, counted over the whole run)."""


class StoredFeatures(StepModule):
    """Frozen and fine-tuned paradigms: the recommender reads stored item features.

    The tensors are non-persistent buffers: they move with the module to its device but are not
    written into checkpoints (they belong to the feature set, not to the run).

    Args:
        recommender: the model.
        item_feats: ``{modality: [I, d_m]}`` (empty for models without content).
    """

    def __init__(self, recommender: Recommender, item_feats: ItemFeatures | None = None) -> None:
        super().__init__()
        self.recommender = recommender
        self.stored = nn.Module()
        self.modalities = list(item_feats or {})
        for modality, tensor in (item_feats or {}).items():
            self.stored.register_buffer(modality, tensor, persistent=False)

    def item_features(self) -> ItemFeatures:
        return {m: getattr(self.stored, m) for m in self.modalities}

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.recommender.loss(batch, self.item_features())
