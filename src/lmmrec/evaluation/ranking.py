r"""The one top-K ranker: evaluation and serving turn scores into rankings only through it.

Scores are inner products ``user_vecs[users] @ item_vecs.T`` (DESIGN.md: every recommender ends in
an inner product), computed in blocks of users; items a user has seen are masked to ``-inf``; then
each block's top-K is taken in two stages instead of one ``torch.topk`` over all ``I`` items:

1. The padded row of ``I' = C * G >= I`` scores is viewed as ``[C, G]``: group ``g`` holds the
   items ``{g, g + G, g + 2G, ...}``. Its maximum is one vectorised ``amax`` over contiguous rows
   (the reduction runs across ``C`` rows of length ``G``, the cheapest layout for it), and
   ``torch.topk`` picks the ``K`` groups with the largest maxima: ``[B, G] -> [B, K]``.
2. The ``K * C`` items of those groups hold the ``K`` best scores (a group that holds one of them
   has a maximum at least as large as the K-th best score, and fewer than ``K`` groups exceed it),
   so ``torch.topk`` takes the top ``K + 1`` among those ``[B, K * C]`` candidates only.

Ties are broken by the **lower item index**, deterministically. A row is ranked again over all its
items, by unique int64 keys ``(orderable float bits << 32) + (2^32 - 1 - item)``, when two of its
``K + 1`` best scores are equal (``torch.topk`` orders equal scores arbitrarily) or when a group
left out in stage 1 reaches its K-th score (a row with fewer than ``K`` unmasked items). Real
scores seldom tie, so this path is rare. The scores returned equal ``torch.topk``'s; the items
too, except that among equal scores ``torch.topk`` returns an arbitrary subset in an arbitrary
order where this function returns the lowest indices in increasing order (a stable sort's).

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
_MIN_GROUPS_PER_K = 4  # below G = 4K groups the two stages save nothing: rank the rows directly
_LAYOUT_K = 64  # the K the item layout is sized for; any K <= G / 4 uses the two stages
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
        self.width = self.groups * per_group if self.groups else self.n_items  # I'
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
        """:meth:`top_k` for ``rows`` of ``user_vecs``; ``seen`` is ``[len(rows), I]``.

        Each block runs few, large tensor operations: on a shared 2-core machine every parallel
        operation can wait a scheduler slice for its second thread, so the per-row bookkeeping
        (item numbers, checks) runs once over all rows after the loop.
        """
        if not 1 <= k <= self.n_items:
            raise DataError(f"k={k} is out of range; choose 1 <= k <= {self.n_items} items")
        user_vecs = user_vecs.detach().to(self.item_vecs.device, torch.float32)
        if _MIN_GROUPS_PER_K * k > self.groups:
            return self._rank_exactly(user_vecs, k, rows, seen, block_size)
        device, n_rows, n_groups = self.item_vecs.device, len(rows), self.groups
        values = torch.empty(n_rows, k + 1, device=device)  # one more, to see a tie at K
        picked = torch.empty(n_rows, k + 1, dtype=torch.int64, device=device)
        chosen = torch.empty(n_rows, k, dtype=torch.int64, device=device)
        reaching = torch.empty(n_rows, dtype=torch.int64, device=device)

        def two_stages(start: int, stop: int, scores: torch.Tensor) -> None:
            grid = scores.view(stop - start, -1, n_groups)  # [B, C, G]: item c * G + g
            group_max = grid.amax(dim=1)  # [B, G]
            best_groups = group_max.topk(k, dim=1, sorted=False).indices  # [B, K]
            members = grid.gather(2, best_groups[:, None, :].expand(-1, grid.shape[1], -1))
            torch.topk(  # [B, C, K] -> [B, K + 1]
                members.view(stop - start, -1),
                k + 1,
                dim=1,
                out=(values[start:stop], picked[start:stop]),
            )
            chosen[start:stop] = best_groups
            # groups whose maximum reaches the K-th score: all of them must have been searched
            torch.sum(group_max >= values[start:stop, k - 1 : k], dim=1, out=reaching[start:stop])

        self._each_block(user_vecs, rows, seen, block_size, two_stages)
        member = torch.div(picked, k, rounding_mode="floor")  # [R, K + 1], c in the group
        items = member * n_groups + chosen.gather(1, picked - member * k)  # [R, K + 1]
        # a group left out may hold a K-th-place tie, and torch.topk orders equal scores
        # arbitrarily: rank those rows again by unique keys (rare: real scores seldom tie)
        tied = (values[:, 1:] == values[:, :-1]).any(dim=1)  # [R]
        redo = torch.nonzero((reaching > k) | tied).flatten().cpu().numpy()
        found = TopK(items=items[:, :k], scores=values[:, :k])
        if len(redo):
            again = self._rank_exactly(
                user_vecs, k, rows[redo], None if seen is None else seen[redo], block_size
            )
            found.items[redo], found.scores[redo] = again.items, again.scores
        return found

    def _rank_exactly(
        self,
        user_vecs: torch.Tensor,
        k: int,
        rows: np.ndarray,
        seen: sp.csr_matrix | None,
        block_size: int,
    ) -> TopK:
        """Top-``k`` over whole rows by unique keys (score, then the lower item index)."""
        items = torch.empty(len(rows), k, dtype=torch.int64, device=self.item_vecs.device)
        scores = torch.empty(len(rows), k, device=self.item_vecs.device)

        def exactly(start: int, stop: int, block: torch.Tensor) -> None:
            scores[start:stop], items[start:stop] = _exact_top_k(block, k)

        self._each_block(user_vecs, rows, seen, block_size, exactly)
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
        the products, the masking and both stages find them in the caches, and the workers'
        buffers stay small whatever ``block_size`` asks (Sports' validation took 1.1-1.3 s in
        blocks of 128 to 2,048 users here: no size was faster beyond the noise).
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
    """``(G, C)`` for the two-stage search over ``n_items`` items, or ``(0, n_items)`` (direct).

    Stage 1 reads ``G`` maxima and stage 2 ranks ``K C`` candidates, so ``G ~ sqrt(K I)`` keeps
    both small; the layout is fixed once for a typical ``K`` (:data:`_LAYOUT_K`), and ``G`` is
    rounded up to a multiple of 16 so that the maxima vectorise.
    """
    per_group = max(2, round(n_items / math.sqrt(_LAYOUT_K * n_items)))  # C
    groups = 16 * math.ceil(n_items / (16 * per_group))  # G, so that G * C - I < 16 C
    if groups < _MIN_GROUPS_PER_K * 2:
        return 0, n_items
    return groups, per_group


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
