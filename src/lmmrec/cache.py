"""A disk cache for things derived from data and features (graphs, neighbour lists).

Keys are built from the **content hashes** of everything the value derives from (the training
interactions, the feature vectors) plus the builder's parameters, never from parameters alone:
swapping a feature set can never reuse a stale graph (MMRec keys ``image_adj_{knn_k}.pt`` by
``knn_k`` only). Values are written atomically.

Values are *plain containers*: tensors, numbers, strings, ``None``, and tuples, lists and
string-keyed dicts of these (a sparse matrix is cached as its ``indptr`` / ``indices`` / ``data``
tensors). They are read back with ``torch.load(weights_only=True)``, which unpickles nothing
else: a dataset folder's ``cache/`` comes from whoever shared the folder, and a pickled object in
it would otherwise run code when loaded. A file that is refused, damaged or unreadable is reported
in one log line and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from lmmrec.io import atomic_path, hash_arrays

T = TypeVar("T")
logger = logging.getLogger(__name__)

_PLAIN_SCALARS = (bool, int, float, str, type(None))


def check_plain(value: Any, where: str = "value") -> None:
    """Raise ``TypeError`` unless ``value`` is a plain container of tensors (module docstring).

    Such values round-trip through ``torch.save`` / ``torch.load(weights_only=True)``.
    """
    if isinstance(value, (torch.Tensor, *_PLAIN_SCALARS)):
        return
    if isinstance(value, (tuple, list)):
        for i, element in enumerate(value):
            check_plain(element, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, element in value.items():
            if not isinstance(key, str):
                raise TypeError(f"cached {where} has a key of type {type(key).__name__}; use str")
            check_plain(element, f"{where}[{key!r}]")
        return
    raise TypeError(
        f"cached {where} is a {type(value).__name__}; a cache value must be tensors, numbers, "
        "strings or tuples/lists/dicts of them (convert arrays and sparse matrices to tensors)"
    )


def _load_plain(path: Path) -> Any:
    """``torch.load`` without unpickling anything but tensors and plain containers."""
    with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True)


def _reason(error: BaseException) -> str:
    """One line saying why a cache file was not loaded (torch's own message spans paragraphs)."""
    if isinstance(error, pickle.UnpicklingError):
        text = str(error)
        detail = next(
            (line.strip() for line in text.splitlines() if "unsupported GLOBAL" in line), None
        )
        if detail is not None:
            return f"refused: it holds a pickled object, not plain tensors ({detail.rstrip('.')})"
        return "refused: not a file of plain tensors (damaged, or a pickle of other objects)"
    first = str(error).strip().splitlines()
    return f"{type(error).__name__}: {first[0] if first else 'unreadable'}"


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
        self,
        kind: str,
        params: dict[str, Any],
        sources: Sequence[str],
        build: Callable[[], T],
        valid: Callable[[Any], bool] | None = None,
    ) -> T:
        """Return the cached value for (kind, params, sources), building and storing it if absent.

        Args:
            kind: what is cached (``"item-knn"``, ``"user-graph"`` ...), part of the file name.
            params: the builder's parameters (JSON-serialisable).
            sources: content hashes of the inputs (``Dataset.content_hash()``, ``tensor_hash``).
            build: computes the value when it is not cached; it must return a plain container
                of tensors (module docstring), or ``TypeError`` is raised.
            valid: says whether a value read from disk has the structure ``build`` returns
                (types, shapes); a file that fails it is rebuilt like a damaged one.
        """
        key = self.key(kind, params, sources)
        if key in self._memory:
            return self._memory[key]
        path = None if self.root is None else self.root / f"{key}.pt"
        if path is not None and path.is_file():
            try:
                value = _load_plain(path)
            except Exception as error:  # bytes from anyone: any parser error is possible
                logger.warning("cache file %s not used (%s); rebuilding it", path, _reason(error))
            else:
                if valid is None or valid(value):
                    self._memory[key] = value
                    return value
                logger.warning(
                    "cache file %s not used (it does not hold what %s builds); rebuilding it",
                    path,
                    kind,
                )
        value = build()
        check_plain(value, kind)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                torch.save(value, tmp)
        self._memory[key] = value
        return value
