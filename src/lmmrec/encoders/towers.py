"""Encoders whose outputs are heads over tower vectors, and reusing those tower vectors.

A CLIP-style dual encoder (``dual``) projects each tower's vector into a shared space. When only
the heads train (strategy ``projection``), the towers are constants: their vectors can be computed
once per item, or taken from a feature set those towers already made (``pair:default`` features
for ``dual:default``), and training runs the heads alone. End-to-end training
(:mod:`lmmrec.training.end2end`) does so.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import torch

from lmmrec.data.features import FeatureSet
from lmmrec.encoders.base import ItemEncoder

logger = logging.getLogger(__name__)


@runtime_checkable
class HeadedEncoder(Protocol):
    """An encoder whose outputs are projection heads over tower vectors (``dual``)."""

    def towers(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...

    def towers_encoder(self) -> ItemEncoder: ...

    def project(
        self, towers: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]: ...


def stored_tower_vectors(
    encoder: HeadedEncoder, stored: Iterable[FeatureSet]
) -> dict[str, torch.Tensor] | None:
    """The tower vectors ``{modality: [I, D_m]}`` of ``encoder`` from the first feature set in
    ``stored`` that its towers made (same weights hash, preprocessing and dimensions, ``zeros``
    policy for missing inputs: the heads of an absent modality then see zeros, whose output is
    zeroed anyway), or None."""
    described = encoder.towers_encoder().describe()
    wanted = json.loads(json.dumps(described, default=str))  # as a manifest stores it
    for features in stored:
        made = features.manifest.get("encoder", {})
        policy = features.manifest.get("missing", {}).get("policy")
        same = all(made.get(k) == wanted[k] for k in ("weights_hash", "preprocessing", "dims"))
        if same and policy == "zeros" and set(features.arrays) >= set(wanted["dims"]):
            logger.info("tower vectors taken from feature set %s", features.name)
            return {m: torch.from_numpy(features.arrays[m]) for m in wanted["dims"]}
    return None
