"""Full-ranking evaluation over all items (DESIGN.md: "every recommender ends in an inner product").

The model's final vectors are computed once (``model.embed``); the one ranker
(:mod:`lmmrec.evaluation.ranking`) scores the split's users in blocks, masks the items each saw in
training and returns their top-K items, and the hits are looked up in the held-out items by a
binary search over sorted ``row * I + item`` keys: no Python loop over users, and no per-block
re-run of the model (MMRec redoes the whole graph forward for every block).

Masking protocol (default = MMRec's): only **training** items are excluded from the ranking, for
validation and for test. ``mask_valid_at_test=True`` also excludes validation items when ranking
for test (Cornac's protocol), so a known validation positive cannot take a test slot.

A candidate pool (``items``, a ``[I]`` bool mask) restricts the ranking to those items: the
others are never ranked, held-out items outside the pool are dropped, and users left with none
are not evaluated. Item cold-start evaluation (:mod:`lmmrec.evaluation.pools`) ranks the warm and
the cold items each in a pool of its own, as WarpRec's cold/warm candidate pools do.

A cut-off larger than the catalogue (or the pool) ranks every item (``metric@K`` is then computed
from the whole list, see :func:`~lmmrec.evaluation.metrics.ranking_metrics`), with one warning.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal, overload

import numpy as np
import scipy.sparse as sp
import torch

from lmmrec.data.dataset import Dataset
from lmmrec.errors import DataError
from lmmrec.evaluation.metrics import ranking_metrics
from lmmrec.evaluation.ranking import Ranker


@dataclass(frozen=True)
class PerUserMetrics:
    """Every metric for every evaluated user, for paired tests across systems.

    Attributes:
        users: ``[R]`` user indices (increasing), the same for every evaluation of a split.
        values: ``{"recall@20": [R] float64 array, ...}``.
    """

    users: np.ndarray
    values: dict[str, np.ndarray]

    def mean(self) -> dict[str, float]:
        """The means :meth:`Evaluator.evaluate` returns without ``per_user``."""
        return {name: float(value.mean()) for name, value in self.values.items()}

    def arrays(self) -> dict[str, np.ndarray]:
        """``{"users": ..., "recall@20": ..., ...}``, ready for ``np.savez``."""
        return {"users": self.users, **self.values}


class Evaluator:
    """Ranks every item for every user who has held-out items in ``split``.

    Args:
        dataset: the data; ``split`` is ``"valid"`` or ``"test"``.
        ks: cut-offs K; those above the number of items rank all items (with a warning).
        mask_valid_at_test: for ``split="test"``, also mask validation items (see module doc).
        batch_size: users per scoring block.
        device: where the ranking runs (the vectors are moved there).
        items: ``[I]`` bool, the candidate pool (default: every item); ``evaluate`` still takes
            all ``I`` item vectors.
    """

    def __init__(
        self,
        dataset: Dataset,
        split: str,
        ks: list[int] | tuple[int, ...] = (5, 10, 20, 50),
        *,
        mask_valid_at_test: bool = False,
        batch_size: int = 2048,
        device: torch.device | str = "cpu",
        items: np.ndarray | None = None,
    ) -> None:
        if split not in ("valid", "test"):
            raise DataError(f"evaluation split must be 'valid' or 'test', got {split!r}")
        self.split = split
        self.ks = sorted(set(ks))
        self.device = torch.device(device)
        self._pool = None if items is None else _pool_indices(items, dataset)
        self.n_items = dataset.n_items if self._pool is None else len(self._pool)  # I (or P)
        what = f"dataset {dataset.name!r}" if self._pool is None else "the candidate pool"
        self.list_length = min(self.ks[-1], self.n_items)  # L: items ranked per user
        if self.ks[-1] > self.n_items:
            too_large = [k for k in self.ks if k > self.n_items]
            warnings.warn(
                f"{what} has {self.n_items} items, fewer than the cut-off(s) "
                f"K={too_large}: those metrics rank all {self.n_items} items; set "
                f"ks={[k for k in self.ks if k <= self.n_items] or [self.n_items]} (and a "
                "valid_metric among them) to report only cut-offs below the catalogue size",
                stacklevel=2,
            )
        self.batch_size = batch_size
        held_out = dataset.split(split)
        seen = dataset.train
        if split == "test" and mask_valid_at_test:
            seen = (seen + dataset.valid).tocsr()
            seen.data[:] = 1.0
        if self._pool is not None:  # columns of the pool only, renumbered 0..P-1
            held_out, seen = held_out[:, self._pool], seen[:, self._pool]
        self.users = np.flatnonzero(np.diff(held_out.indptr) > 0)  # [R]
        self.n_users = len(self.users)
        if self.n_users == 0:
            raise DataError(
                f"dataset {dataset.name!r}: the {split} split has no users to evaluate"
                + ("" if self._pool is None else " with held-out items in the candidate pool")
            )
        self._seen: sp.csr_matrix = seen[self.users]  # [R, I]
        held = held_out[self.users]  # [R, I], sorted columns
        rows = np.repeat(np.arange(self.n_users, dtype=np.int64), np.diff(held.indptr))
        # sorted, since CSR rows come in order with sorted columns
        self._relevant = torch.from_numpy(rows * self.n_items + held.indices).to(self.device)
        self._n_relevant = torch.from_numpy(np.diff(held.indptr)).to(self.device)  # [R]
        self._users = torch.from_numpy(self.users).to(self.device)
        self._pool_index = None if self._pool is None else torch.from_numpy(self._pool)

    @overload
    def evaluate(
        self, user_vecs: torch.Tensor, item_vecs: torch.Tensor, per_user: Literal[False] = ...
    ) -> dict[str, float]: ...

    @overload
    def evaluate(
        self, user_vecs: torch.Tensor, item_vecs: torch.Tensor, per_user: Literal[True]
    ) -> PerUserMetrics: ...

    @torch.inference_mode()
    def evaluate(
        self, user_vecs: torch.Tensor, item_vecs: torch.Tensor, per_user: bool = False
    ) -> dict[str, float] | PerUserMetrics:
        """Metrics over the split's users from final vectors ``[U, D]`` and ``[I, D]``.

        Returns:
            ``{"recall@20": 0.071, "ndcg@20": ..., ...}``, the mean over users of every metric
            at every K; with ``per_user=True`` a :class:`PerUserMetrics` with each user's values.
        """
        if self._pool_index is not None:
            item_vecs = item_vecs[self._pool_index.to(item_vecs.device)]  # [P, D]
        ranker = Ranker(item_vecs.to(self.device))
        queries = user_vecs.to(self.device, torch.float32)[self._users]  # [R, D]
        top = ranker.top_k(queries, self.list_length, seen=self._seen, block_size=self.batch_size)
        rows = torch.arange(self.n_users, device=self.device)[:, None]  # [R, 1]
        flat = rows * self.n_items + top.items  # [R, L]
        found = torch.searchsorted(self._relevant, flat).clamp_(max=len(self._relevant) - 1)
        hits = (self._relevant[found] == flat).float()  # [R, L]
        values = ranking_metrics(hits, self._n_relevant, self.ks)
        if per_user:
            return PerUserMetrics(
                users=self.users.copy(),
                values={name: v.double().cpu().numpy() for name, v in values.items()},
            )
        return {name: float(v.double().mean()) for name, v in values.items()}


def _pool_indices(items: np.ndarray, dataset: Dataset) -> np.ndarray:
    """``[P]`` int64 indices of the pool's items from its ``[I]`` bool mask."""
    items = np.asarray(items)
    if items.dtype != np.bool_ or items.shape != (dataset.n_items,):
        raise DataError(
            f"candidate pool: expected a bool mask of shape ({dataset.n_items},) over the items of "
            f"dataset {dataset.name!r}, got {items.dtype} {items.shape}"
        )
    pool = np.flatnonzero(items).astype(np.int64)
    if len(pool) == 0:
        raise DataError(f"dataset {dataset.name!r}: the candidate pool holds no items")
    return pool
