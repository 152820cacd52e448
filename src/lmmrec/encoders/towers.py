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

import numpy as np
import torch

from lmmrec.data.catalog import ItemCatalog
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
    """See :func:`matching_tower_set`; its vectors ``{modality: [I, D_m]}``, or None."""
    features = matching_tower_set(encoder, stored)
    if features is None:
        return None
    dims = encoder.towers_encoder().output_dims()
    return {m: torch.from_numpy(features.arrays[m]) for m in dims}


def matching_tower_set(encoder: HeadedEncoder, stored: Iterable[FeatureSet]) -> FeatureSet | None:
    """The first feature set in ``stored`` that the towers of ``encoder`` made, or None: same
    weights hash, preprocessing and dimensions, and the ``zeros`` policy for missing inputs (the
    heads of an absent modality then see zeros, whose output is zeroed anyway)."""
    described = encoder.towers_encoder().describe()
    wanted = json.loads(json.dumps(described, default=str))  # as a manifest stores it
    for features in stored:
        made = features.manifest.get("encoder", {})
        policy = features.manifest.get("missing", {}).get("policy")
        same = all(made.get(k) == wanted[k] for k in ("weights_hash", "preprocessing", "dims"))
        if same and policy == "zeros" and set(features.arrays) >= set(wanted["dims"]):
            logger.info("tower vectors taken from feature set %s", features.name)
            return features
    return None


def heads_only(encoder: ItemEncoder, also: Iterable[torch.nn.Parameter] = ()) -> bool:
    """Whether ``encoder`` splits into towers and heads (:class:`HeadedEncoder`) and nothing of
    it trains but its projection heads (and the parameters in ``also``, e.g. a temperature):
    then its tower vectors are constants."""
    if not isinstance(encoder, HeadedEncoder):
        return False
    allowed = {id(p) for m in encoder.layout().projections for p in m.parameters()}
    allowed |= {id(p) for p in also}
    return all(id(p) in allowed for p in encoder.parameters() if p.requires_grad)


def project_stored_towers(
    encoder: ItemEncoder, stored: Iterable[FeatureSet], catalog: ItemCatalog, batch_size: int = 4096
) -> dict[str, np.ndarray] | None:
    """Feature extraction without running the towers: the heads of ``encoder`` over the tower
    vectors of a stored feature set they made, for every item of ``catalog``.

    Returns:
        ``{"out_<modality>": [I, D_m], "status_<input>": [I] int8}`` as
        :mod:`lmmrec.encoders.features` collects them (:func:`stored_statuses`), or None when
        no stored feature set fits.
    """
    from lmmrec.encoders.features import PRESENT

    if not isinstance(encoder, HeadedEncoder):
        return None
    source = matching_tower_set(encoder, stored)
    if source is None:
        return None
    vectors = stored_tower_vectors(encoder, [source])
    status = stored_statuses(source, catalog)
    present = {m: torch.from_numpy(s == PRESENT) for m, s in status.items()}
    parts: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for start in range(0, len(catalog), batch_size):
            rows = slice(start, start + batch_size)
            out = encoder.project(
                {m: v[rows] for m, v in vectors.items()},
                {f"{m}_present": p[rows] for m, p in present.items()},
            )
            for modality, tensor in out.items():
                parts.setdefault(modality, []).append(tensor.float())
    arrays = {f"out_{m}": torch.cat(p).numpy() for m, p in parts.items()}
    return arrays | {f"status_{m}": s for m, s in status.items()}


def stored_statuses(source: FeatureSet, catalog: ItemCatalog) -> dict[str, np.ndarray]:
    """Per input modality, each item's status ``[I]`` int8 (present, absent, unreadable) as the
    extraction of ``source`` found it: an item its missing report lists is absent when the
    catalogue has no reference (or text) for it, unreadable otherwise."""
    from lmmrec.encoders.features import ABSENT, PRESENT, UNREADABLE

    absent = {
        "image": np.array([catalog.image_path(i) is None for i in range(len(catalog))]),
        "text": np.array([not t.strip() for t in catalog.texts]),
    }
    status = {}
    for modality, lacking in absent.items():
        listed = np.zeros(len(catalog), dtype=bool)
        report = source.manifest["missing"]["modalities"].get(modality, {})
        listed[np.asarray(report.get("items", []), dtype=np.int64)] = True
        status[modality] = np.where(listed, np.where(lacking, ABSENT, UNREADABLE), PRESENT)
    return {m: s.astype(np.int8) for m, s in status.items()}
