"""Top-K indexes over a bundle's item vectors: exact (the one ranker) or approximate (faiss).

Both answer ``search(queries [B, D], k, exclude)`` with a :class:`~lmmrec.evaluation.TopK`, best
first, where ``exclude`` is a ``[B, I]`` sparse matrix of items each query must not get back.

- ``exact`` (default): :class:`~lmmrec.evaluation.Ranker`, the function the evaluator uses, so a
  served ranking is the evaluated one.
- ``faiss``: an inverted-file index (``IndexIVFFlat``, inner product) that scores only the items of
  the ``nprobe`` clusters closest to the query; for catalogues where one exact product per
  request is too slow. It searches ``k`` plus the most items any query excludes, then drops the
  excluded ones. Its recall against exact is measured in ``benchmarks/bench_serving.py``.

An index is never changed in place: ``updated(item_vecs, rows)`` returns a new one over the item
vectors after a write (rows ``rows`` added or replaced), so a service swaps it in atomically while
readers keep ranking with the one they hold.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import scipy.sparse as sp
import torch

from lmmrec.errors import ConfigError
from lmmrec.evaluation.ranking import Ranker, TopK

INDEX_KINDS = ("exact", "faiss")


class Index(Protocol):
    """What the service ranks with."""

    kind: str

    def search(self, queries: torch.Tensor, k: int, exclude: sp.csr_matrix | None) -> TopK:
        """Top-``k`` of ``[B, D]`` queries; ``-inf`` scores (and item ``-1`` for faiss) where
        fewer than ``k`` items qualify."""
        ...

    def updated(self, item_vecs: torch.Tensor, rows: np.ndarray) -> Index:
        """A new index over ``[I', D]`` ``item_vecs``, where rows ``rows`` are new or changed
        (every other row as before); this one is left as it is."""
        ...


class ExactIndex:
    """Exact inner-product top-K through the one ranker."""

    kind = "exact"

    def __init__(self, item_vecs: torch.Tensor) -> None:
        self.ranker = Ranker(item_vecs)

    def search(self, queries: torch.Tensor, k: int, exclude: sp.csr_matrix | None) -> TopK:
        return self.ranker.top_k(queries, k, seen=exclude, block_size=max(1, len(queries)))

    def updated(self, item_vecs: torch.Tensor, rows: np.ndarray) -> ExactIndex:
        """The ranker prepared again over the new item vectors (``O(I D)``, no training)."""
        return ExactIndex(item_vecs)


class FaissIndex:
    """Approximate inner-product top-K: faiss ``IndexIVFFlat``.

    Args:
        item_vecs: ``[I, D]`` item vectors.
        nlist: number of clusters (default ``4 sqrt(I)``, faiss's usual range).
        nprobe: clusters searched per query (more: higher recall, slower).
        seed: k-means seed, so that an index is rebuilt identically.
    """

    kind = "faiss"

    def __init__(
        self, item_vecs: torch.Tensor, nlist: int | None = None, nprobe: int = 16, seed: int = 0
    ) -> None:
        try:
            import faiss
        except ImportError as error:
            raise ConfigError(
                "index 'faiss' needs faiss-cpu: pip install 'lmmrec[serve]' (or use index exact)"
            ) from error
        vectors = np.ascontiguousarray(item_vecs.detach().cpu().numpy(), dtype=np.float32)
        n_items, dim = vectors.shape
        self.n_items = n_items
        self.nlist = nlist or max(1, min(n_items // 39, int(4 * math.sqrt(n_items))))
        quantizer = faiss.IndexFlatIP(dim)
        self._index = faiss.IndexIVFFlat(quantizer, dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
        self._index.cp.seed = seed
        self._index.train(vectors)  # k-means needs 39 points per cluster: nlist <= I / 39
        self._index.add(vectors)
        self._index.nprobe = min(nprobe, self.nlist)
        self._quantizer = quantizer  # faiss does not own it from Python: keep it alive

    def updated(self, item_vecs: torch.Tensor, rows: np.ndarray) -> FaissIndex:
        """A copy of the index with rows ``rows`` removed and added again from ``item_vecs``:
        each goes to the list of its nearest existing cluster (the clusters are not retrained)."""
        import faiss

        ids = np.asarray(rows, dtype=np.int64)
        vectors = np.ascontiguousarray(item_vecs[torch.from_numpy(ids)].numpy(), np.float32)
        copy = object.__new__(FaissIndex)
        copy.n_items, copy.nlist = int(item_vecs.shape[0]), self.nlist
        copy._index = faiss.clone_index(self._index)  # owns a copy of the quantizer
        copy._index.nprobe = self._index.nprobe
        copy._quantizer = None
        copy._index.remove_ids(ids)
        copy._index.add_with_ids(vectors, ids)
        return copy

    def search(self, queries: torch.Tensor, k: int, exclude: sp.csr_matrix | None) -> TopK:
        n_queries = len(queries)
        extra = 0 if exclude is None else int(np.diff(exclude.indptr).max(initial=0))
        wanted = min(k + extra, self.n_items)
        scores, items = self._index.search(
            np.ascontiguousarray(queries.detach().cpu().numpy(), dtype=np.float32), wanted
        )  # [B, k + extra]; item -1 where fewer were found
        keep = items >= 0
        if exclude is not None and exclude.nnz:
            rows = np.repeat(np.arange(n_queries, dtype=np.int64), np.diff(exclude.indptr))
            banned = np.sort(rows * self.n_items + exclude.indices)  # sorted keys row * I + item
            flat = np.arange(n_queries)[:, None] * self.n_items + items  # [B, k + extra]
            found = np.minimum(np.searchsorted(banned, flat), len(banned) - 1)
            keep &= banned[found] != flat
        # the kept results, in faiss's order, moved to the front of each row (a stable sort)
        order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
        top_items = np.take_along_axis(items, order, axis=1)
        top_scores = np.take_along_axis(scores, order, axis=1)
        valid = np.take_along_axis(keep, order, axis=1)
        top_items[~valid], top_scores[~valid] = -1, -np.inf
        if top_items.shape[1] < k:  # a catalogue smaller than k
            pad = k - top_items.shape[1]
            top_items = np.pad(top_items, ((0, 0), (0, pad)), constant_values=-1)
            top_scores = np.pad(top_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        return TopK(items=torch.from_numpy(top_items), scores=torch.from_numpy(top_scores))


def build_index(kind: str, item_vecs: torch.Tensor, nprobe: int = 16) -> Index:
    """The index ``kind`` (one of :data:`INDEX_KINDS`) over ``[I, D]`` item vectors."""
    if kind == "exact":
        return ExactIndex(item_vecs)
    if kind == "faiss":
        return FaissIndex(item_vecs, nprobe=nprobe)
    raise ConfigError(f"unknown index {kind!r}; choose one of {', '.join(INDEX_KINDS)}")
