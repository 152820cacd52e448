"""A disk cache for things derived from data and features (graphs, neighbour lists).

Keys are built from the **content hashes** of everything the value derives from (the training
interactions, the feature vectors) plus the builder's parameters, never from parameters alone:
swapping a feature set can never reuse a stale graph (MMRec keys ``image_adj_{knn_k}.pt`` by
``knn_k`` only). Values are anything ``torch.save`` can write (tensors, scipy matrices, arrays)
and are written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from lmmrec.io import atomic_path, hash_arrays

T = TypeVar("T")
logger = logging.getLogger(__name__)


def tensor_hash(tensor: torch.Tensor) -> str:
    """Content hash of a tensor's values (moved to the CPU as float32 if needed)."""
    return hash_arrays(np.ascontiguousarray(tensor.detach().cpu().float().numpy()))


class DerivedCache:
    """Get-or-build cache under ``root``; ``root=None`` keeps values in memory only.

    Args:
        root: folder of the cache files (e.g. ``<dataset>/cache``).
    """

    def __init__(self, root: Path | None) -> None:
        self.root = None if root is None else Path(root)
        self._memory: dict[str, Any] = {}

    @staticmethod
    def key(kind: str, params: dict[str, Any], sources: Sequence[str]) -> str:
        """``<kind>-<sha256 of params and source hashes>``, stable across processes."""
        payload = json.dumps({"params": params, "sources": list(sources)}, sort_keys=True)
        return f"{kind}-{hashlib.sha256(payload.encode()).hexdigest()[:20]}"

    def get_or_build(
        self, kind: str, params: dict[str, Any], sources: Sequence[str], build: Callable[[], T]
    ) -> T:
        """Return the cached value for (kind, params, sources), building and storing it if absent.

        Args:
            kind: what is cached (``"item-knn"``, ``"user-graph"`` ...), part of the file name.
            params: the builder's parameters (JSON-serialisable).
            sources: content hashes of the inputs (``Dataset.content_hash()``, ``tensor_hash``).
            build: computes the value when it is not cached.
        """
        key = self.key(kind, params, sources)
        if key in self._memory:
            return self._memory[key]
        path = None if self.root is None else self.root / f"{key}.pt"
        if path is not None and path.is_file():
            try:
                value = torch.load(path, weights_only=False)
            except (OSError, RuntimeError, EOFError) as error:
                logger.warning("ignoring unreadable cache file %s (%s); rebuilding", path, error)
            else:
                self._memory[key] = value
                return value
        value = build()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                torch.save(value, tmp)
        self._memory[key] = value
        return value
