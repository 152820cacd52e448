"""Training triples: each training interaction with one uniform negative item (vectorised).

Negatives are drawn uniformly from the items the user has **not** interacted with in training,
as in BPR (Rendle et al., UAI 2009) and MMRec: draw uniformly over all items, then redraw only the
rejected entries until none collides with a training pair. Membership is a binary search over the
sorted keys ``user * n_items + item`` of the CSR matrix, so no Python loop touches interactions.

``items`` narrows the draw to candidate items: with the items that have training interactions
(``TrainConfig.negatives: trained``), items that appear only in validation or test, such as new
items, are never trained as negatives, as items that arrive after training would not be.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from lmmrec.errors import DataError


@dataclass(frozen=True)
class Batch:
    """A batch of B training triples, all ``[B]`` int64 tensors on the training device."""

    users: torch.Tensor
    pos_items: torch.Tensor
    neg_items: torch.Tensor

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def node_rows(self, n_users: int) -> torch.Tensor:
        """``[3B]`` rows of a users-then-items node table ``[U + I, .]``: users, positives,
        negatives (items offset by ``n_users``), for one gather instead of three."""
        return torch.cat([self.users, self.pos_items + n_users, self.neg_items + n_users])


class NegativeSampler:
    """Uniform negatives excluding each user's training items.

    Args:
        train: binary ``[U, I]`` CSR matrix of training interactions (column indices sorted).
        items: ``[C]`` int64 candidate negatives (default: every item).
    """

    def __init__(self, train: sp.csr_matrix, items: np.ndarray | None = None) -> None:
        self.n_users, self.n_items = train.shape
        self._candidates = None if items is None else np.asarray(items, dtype=np.int64)
        degree = np.diff(train.indptr)
        if self._candidates is None:
            n_candidates, covered = self.n_items, degree
        else:
            n_candidates = len(self._candidates)
            covered = np.diff(train[:, self._candidates].tocsr().indptr)
        if (covered >= n_candidates).any():
            full = np.flatnonzero(covered >= n_candidates)[:5].tolist()
            raise DataError(
                f"users {full} interacted with every item that can be a negative, so none "
                "exists for them; remove them from the training data"
            )
        train = train.tocsr()
        train.sort_indices()
        self.users = np.repeat(np.arange(self.n_users, dtype=np.int64), degree)
        self.items = train.indices.astype(np.int64)
        self._keys = self.users * self.n_items + self.items  # sorted: rows, then sorted columns

    def _is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users * self.n_items + items
        pos = np.searchsorted(self._keys, keys)
        pos[pos == len(self._keys)] = 0
        return self._keys[pos] == keys

    def sample(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One negative item per entry of ``users`` (``[N]`` -> ``[N]`` int64)."""
        negatives = self._draw(len(users), rng)
        rejected = np.flatnonzero(self._is_positive(users, negatives))
        while len(rejected):
            redraw = self._draw(len(rejected), rng)
            negatives[rejected] = redraw
            rejected = rejected[self._is_positive(users[rejected], redraw)]
        return negatives

    def _draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``[n]`` uniform candidate items (every item: the same draws as before candidates)."""
        if self._candidates is None:
            return rng.integers(0, self.n_items, size=n, dtype=np.int64)
        return self._candidates[rng.integers(0, len(self._candidates), size=n, dtype=np.int64)]

    def epoch(
        self,
        batch_size: int,
        rng: np.random.Generator,
        device: torch.device | str = "cpu",
        shard: tuple[int, int] = (0, 1),
    ) -> Iterator[Batch]:
        """One shuffled pass over all training interactions, with fresh negatives.

        Args:
            batch_size: triples per batch (the last batch may be smaller).
            rng: drives the shuffle and the negatives; seeded by the trainer.
            device: where the batch tensors are placed (moved once per epoch).
            shard: ``(rank, world_size)``; under data parallelism each process takes every
                ``world_size``-th batch of the same permutation, and every process takes
                :meth:`n_batches` of them (processes short of a batch repeat the epoch's first
                ones, as ``DistributedSampler`` pads), so their gradient synchronisations pair up.
        """
        order = rng.permutation(len(self.users))
        users = self.users[order]
        triples = torch.from_numpy(
            np.stack([users, self.items[order], self.sample(users, rng)])
        ).to(device)  # [3, N]
        rank, world = shard
        total = self.n_batches(batch_size)
        for step in range(self.n_batches(batch_size, world)):
            start = ((rank + step * world) % total) * batch_size
            chunk = triples[:, start : start + batch_size]
            yield Batch(users=chunk[0], pos_items=chunk[1], neg_items=chunk[2])

    def n_batches(self, batch_size: int, world: int = 1) -> int:
        total = -(-len(self.users) // batch_size)
        return -(-total // world)
