r"""The one top-K ranker: evaluation and serving turn scores into rankings only through it.

Scores are inner products ``user_vecs[users] @ item_vecs.T`` (DESIGN.md: every recommender ends in
an inner product), computed in blocks of users; items a user has seen are masked to ``-inf``; then
each block's top K is selected:

- on the CPU by :func:`lmmrec.evaluation.selection.select_top_k`, compiled by numba: the score row
  is read as ``G`` groups of ``C`` items; the K-th largest group maximum bounds the ``K C``
  candidates; the K-th largest candidate bounds the K best, sorted by unique keys. It reads each
  score once or twice and never copies the row (the same two stages as torch operations, group
  maxima, ``topk``, ``gather`` and ``topk``, took 3.8x as long);
- on any other device (a GPU) by one ``torch.topk`` over unique int64 keys
  ``(orderable float bits << 32) + (2^32 - 1 - item)``.

Ties are broken by the **lower item index** on both paths, deterministically: the scores returned
equal ``torch.topk``'s, and so do the items, except that among equal scores ``torch.topk`` returns
an arbitrary subset in an arbitrary order where this function returns the lowest indices in
increasing order (a stable sort's).

Dimensions: ``U`` users, ``I`` items, ``D`` vector width, ``B`` users per block, ``K`` cut-off.
Scores must not be NaN (the trainer's NaN guard stops training before such vectors exist).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from threadpoolctl import ThreadpoolController

from lmmrec.errors import DataError

_LOW = (1 << 32) - 1  # the low 32 bits of a key hold LOW - item, so lower items rank first
_LAYOUT_K = 64  # the K the item layout is sized for (any K works)
_BLOCK_BYTES = 16 << 20  # the most scores a CPU block holds (users x I' x 4 bytes)
_ITEM_MAJOR_BELOW = 16  # blocks of at most this many queries are scored item-major (Ranker)


@dataclass(frozen=True)
class TopK:
    """The ``K`` best items of each queried user, best first.

    Attributes:
        items: ``[B, K]`` int64 item indices.
        scores: ``[B, K]`` float32 scores; ``-inf`` where fewer than ``K`` items were rankable and
            an excluded item fills the slot (drop those with ``torch.isfinite``).
    """

    items: torch.Tensor
    scores: torch.Tensor


class Ranker:
    """Item vectors prepared once for ranking: transposed, and the score rows' grouping fixed
    (``G`` groups of ``C``; rows are padded to ``I' = G C`` columns of ``-inf``).

    Build one per set of item vectors (an evaluation, a served bundle) and query it many times.

    Args:
        item_vecs: ``[I, D]`` item vectors; the ranking runs on their device.
    """

    def __init__(self, item_vecs: torch.Tensor) -> None:
        self.item_vecs = item_vecs.detach().float()  # [I, D]
        self.n_items, self.dim = self.item_vecs.shape
        self.groups, per_group = _grouping(self.n_items)
        self.width = self.groups * per_group  # I'
        self._item_t = self.item_vecs.T.contiguous()  # [D, I]
        # on the CPU the score products run in numpy (see _products)
        self._item_rows = self.item_vecs.contiguous().numpy() if self.item_vecs.is_cpu else None

    def top_k(
        self,
        user_vecs: torch.Tensor,
        k: int,
        *,
        users: torch.Tensor | np.ndarray | None = None,
        seen: sp.csr_matrix | None = None,
        candidates: torch.Tensor | np.ndarray | None = None,
        block_size: int = 512,
    ) -> TopK:
        """Top-``k`` items by inner product for each queried user, seen items excluded.

        Args:
            user_vecs: ``[U, D]`` query vectors (users, items for similar items, sessions).
            k: the cut-off, ``1 <= k <=`` the number of rankable items (``I`` or the candidates).
            users: ``[B]`` rows of ``user_vecs`` to rank for (default: all ``U``).
            seen: ``[U, I]`` sparse matrix whose non-zeros are never recommended to that row.
            candidates: ``[C]`` distinct item indices: rank only these (indices returned are
                still item indices).
            block_size: users scored at once (``[block_size, I']`` float32 scores are held).

        Returns:
            :class:`TopK` with ``[B, k]`` items and scores, on the item vectors' device.

        Raises:
            DataError: when ``k`` is out of range or the shapes disagree.
        """
        if user_vecs.shape[1] != self.dim:
            raise DataError(
                f"user vectors are {user_vecs.shape[1]} wide but item vectors {self.dim}; "
                "pass both from the same model's embed()"
            )
        if seen is not None and seen.shape != (user_vecs.shape[0], self.n_items):
            raise DataError(
                f"seen items are {seen.shape[0]} x {seen.shape[1]}; expected one row per user "
                f"vector and one column per item ({user_vecs.shape[0]} x {self.n_items})"
            )
        rows = np.arange(user_vecs.shape[0]) if users is None else _as_numpy(users)
        sub_seen = None if seen is None else seen[rows]
        if candidates is not None:
            cand = _as_numpy(candidates)
            device = self.item_vecs.device
            sub = Ranker(self.item_vecs[torch.from_numpy(cand).to(device)])
            sub_seen = None if sub_seen is None else _column_positions(sub_seen, cand)
            found = sub._rank(user_vecs, k, rows, sub_seen, block_size)
            return TopK(items=torch.from_numpy(cand).to(device)[found.items], scores=found.scores)
        return self._rank(user_vecs, k, rows, sub_seen, block_size)

    def _rank(
        self,
        user_vecs: torch.Tensor,
        k: int,
        rows: np.ndarray,
        seen: sp.csr_matrix | None,
        block_size: int,
    ) -> TopK:
        """:meth:`top_k` for ``rows`` of ``user_vecs``; ``seen`` is ``[len(rows), I]``."""
        if not 1 <= k <= self.n_items:
            raise DataError(f"k={k} is out of range; choose 1 <= k <= {self.n_items} items")
        user_vecs = user_vecs.detach().to(self.item_vecs.device, torch.float32)
        device = self.item_vecs.device
        items = torch.empty(len(rows), k, dtype=torch.int64, device=device)
        scores = torch.empty(len(rows), k, device=device)
        if self._item_rows is not None:
            # numba loads with the first CPU ranking, not with every import of lmmrec
            from lmmrec.evaluation.selection import select_top_k

            found_items, found_scores = items.numpy(), scores.numpy()

            def select(start: int, stop: int, block: torch.Tensor) -> None:
                select_top_k(
                    block.numpy(),
                    self.n_items,
                    self.groups,
                    k,
                    found_scores[start:stop],
                    found_items[start:stop],
                )
        else:

            def select(start: int, stop: int, block: torch.Tensor) -> None:
                scores[start:stop], items[start:stop] = _exact_top_k(block[:, : self.n_items], k)

        self._each_block(user_vecs, rows, seen, block_size, select)
        return TopK(items=items, scores=scores)

    def _each_block(
        self,
        user_vecs: torch.Tensor,
        rows: np.ndarray,
        seen: sp.csr_matrix | None,
        block_size: int,
        work: Callable[[int, int, torch.Tensor], None],
    ) -> None:
        """Call ``work(start, stop, scores [B, I'])`` once per block of ``rows``; the scores of
        seen and padding items are -inf, and live in a buffer reused by the next block.

        On the CPU with ``T > 1`` torch threads, ``T`` workers of a small thread pool each take
        every ``T``-th block and run it on **one** thread, torch's and OpenBLAS's alike (torch
        and numpy let go of the GIL): the blocks are independent, so the cores never wait for
        each other, where one block after another on ``T`` threads would meet at a barrier after
        every operation (and, on cores shared with other work, wait a scheduler slice there).
        A CPU block holds at most :data:`_BLOCK_BYTES` of scores (226 users of Sports), so that
        the products, the masking and the selection find them in the caches, and the workers'
        buffers stay small whatever ``block_size`` asks (with the numba selection, caps of 4 to
        64 MiB changed Sports' validation by less than the noise: benchmarks/README.md).
        ``work`` writes disjoint rows of its outputs, so it needs no lock.
        """
        threads = torch.get_num_threads() if self._item_rows is not None else 1
        if self._item_rows is not None:  # a CPU block's scores stay within the caches
            block_size = min(block_size, max(16, _BLOCK_BYTES // (4 * self.width)))
        spans = [
            (start, min(start + block_size, len(rows))) for start in range(0, len(rows), block_size)
        ]
        if 1 < len(spans) < threads:  # fewer blocks than threads: make one per thread
            size = math.ceil(len(rows) / threads)
            spans = [(start, min(start + size, len(rows))) for start in range(0, len(rows), size)]

        inference = torch.is_inference_mode_enabled()  # a thread's own state: pass it on

        def run(share: list[tuple[int, int]]) -> None:
            width = max(stop - start for start, stop in share)
            with torch.no_grad(), torch.inference_mode(inference):
                buffer = torch.full((width, self.width), -torch.inf, device=self.item_vecs.device)
                for start, stop in share:  # the padding columns stay -inf
                    scores = buffer[: stop - start]
                    block = torch.from_numpy(rows[start:stop]).to(self.item_vecs.device)
                    self._products(user_vecs[block], scores[:, : self.n_items])
                    if seen is not None:
                        flat = _flat_indices(seen, start, stop, self.width)
                        scores.view(-1)[torch.from_numpy(flat).to(scores.device)] = -torch.inf
                    work(start, stop, scores)

        if threads == 1 or len(spans) == 1:
            run(spans)
            return
        with single_threaded_blas():
            shares = [spans[worker::threads] for worker in range(threads)]
            jobs = [_pool().submit(run, share) for share in shares if share]
            for job in jobs:
                job.result()

    def _products(self, queries: torch.Tensor, out: torch.Tensor) -> None:
        """``out[B, I] = queries[B, D] @ item_vecs.T``.

        On the CPU the products run in numpy's BLAS (the OpenBLAS of numpy's wheels), which
        writes ``[B, I]`` scores about twice as fast as torch's ``mm`` for these shapes here
        (``D`` small: 0.5 s against 1.0 s for Sports' validation products); a served batch of at
        most :data:`_ITEM_MAJOR_BELOW` queries goes item-major, ``[I, D] x [D, B]`` (1.6 ms for 8
        queries x 63,001 items on one core, torch.mm 2.5 ms); one query, and any GPU, use torch.
        """
        if self._item_rows is None or len(queries) == 1:
            torch.mm(queries, self._item_t, out=out)
        elif len(queries) <= _ITEM_MAJOR_BELOW:
            out.numpy()[...] = (self._item_rows @ queries.numpy().T).T  # [I, B] -> [B, I]
        else:
            np.matmul(queries.numpy(), self._item_t.numpy(), out=out.numpy())


def top_k(
    user_vecs: torch.Tensor,
    item_vecs: torch.Tensor,
    k: int,
    *,
    users: torch.Tensor | np.ndarray | None = None,
    seen: sp.csr_matrix | None = None,
    candidates: torch.Tensor | np.ndarray | None = None,
    block_size: int = 512,
) -> TopK:
    """``Ranker(item_vecs).top_k(user_vecs, k, ...)``: one ranking over ``[I, D]`` item vectors."""
    return Ranker(item_vecs).top_k(
        user_vecs, k, users=users, seen=seen, candidates=candidates, block_size=block_size
    )


def _exact_top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` of ``[B, N]`` scores by unique int64 keys: score, then the lower column first."""
    bits = (scores + 0.0).view(torch.int32)  # + 0.0 turns -0.0 into 0.0: they compare equal
    ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # int32 with the floats' order
    columns = torch.arange(scores.shape[1], device=scores.device)  # [N]
    keys = ordered.long() * (1 << 32) + (_LOW - columns)  # [B, N], unique per row
    top = keys.topk(k, dim=1, sorted=True).values  # [B, k]
    high = (top >> 32).int()
    values = (high ^ ((high >> 31) & 0x7FFFFFFF)).view(torch.float32)
    return values, _LOW - (top & _LOW)


def _grouping(n_items: int) -> tuple[int, int]:
    """``(G, C)``: ``G`` groups of ``C`` items for the CPU selection, ``G C >= n_items``.

    The selection counts over ``G`` maxima and over ``K C`` candidates, so ``G ~ sqrt(K I)``
    keeps both small; the layout is fixed once for a typical ``K`` (:data:`_LAYOUT_K`), and ``G``
    is a multiple of 16 so that the maxima vectorise.
    """
    per_group = max(1, round(math.sqrt(n_items / _LAYOUT_K)))  # C
    return 16 * math.ceil(n_items / (16 * per_group)), per_group  # G, with G * C - I < 16 C


@functools.cache
def _pool() -> ThreadPoolExecutor:
    """The CPU ranking workers: one torch thread each (idle, blocked, between rankings)."""
    return ThreadPoolExecutor(
        max_workers=os.cpu_count() or 1,
        thread_name_prefix="lmmrec-rank",
        initializer=torch.set_num_threads,  # per thread: the caller keeps its own setting
        initargs=(1,),
    )


# a forked child has the pool object but none of its threads: it makes its own
os.register_at_fork(after_in_child=_pool.cache_clear)


def single_threaded_blas() -> contextlib.AbstractContextManager[Any]:
    """A context in which numpy's BLAS runs on one thread (the pool's workers each hold one)."""
    return _blas_controller().limit(limits=1, user_api="blas")


@functools.cache
def _blas_controller() -> ThreadpoolController:
    """The process's thread pools, found once (a fresh look costs ~0.5 ms, a limit ~10 us)."""
    return ThreadpoolController()


def _as_numpy(index: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(index, torch.Tensor):
        index = index.cpu().numpy()
    return np.asarray(index, dtype=np.int64)


def _column_positions(seen: sp.csr_matrix, candidates: np.ndarray) -> sp.csr_matrix:
    """``seen`` ``[B, I]`` with columns renumbered to their place in ``candidates``; others go."""
    position = np.full(seen.shape[1], -1, dtype=np.int64)
    position[candidates] = np.arange(len(candidates))
    mapped = seen.tocoo()
    cols = position[mapped.col]
    keep = cols >= 0
    return sp.csr_matrix(
        (mapped.data[keep], (mapped.row[keep], cols[keep])), shape=(seen.shape[0], len(candidates))
    )


def _flat_indices(seen: sp.csr_matrix, start: int, stop: int, width: int) -> np.ndarray:
    """Flat indices ``(r - start) * width + c`` of the non-zeros in rows ``start..stop-1``."""
    lo, hi = seen.indptr[start], seen.indptr[stop]
    counts = np.diff(seen.indptr[start : stop + 1])
    local = np.repeat(np.arange(stop - start, dtype=np.int64), counts)
    return local * width + seen.indices[lo:hi].astype(np.int64)
