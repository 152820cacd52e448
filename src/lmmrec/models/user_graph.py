"""DualGNN's user-user co-occurrence graph, built from the training interactions.

Wang, Wei, Yin, Li, Nie. "DualGNN: Dual Graph Neural Network for Multimedia Recommendation." IEEE
TMM 2021 (user co-occurrence graph): users are linked when they interacted with the same items,
weighted by the number of such items. MMRec ships this as a separate script
(``preprocessing/dualgnn-gen-u-u-matrix.py``) that compares every pair of users in Python and
writes ``user_graph_dict.npy``; the model then keeps each user's ``k`` most co-occurring users.
Here the counts are one sparse product :math:`C = R R^\\top` (diagonal dropped), cut to the top
``k`` per row, and cached by the content hash of the training matrix.

Ties in the count are broken by the lower user index (MMRec's ``torch.topk`` leaves their order
unspecified).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from lmmrec.io import hash_arrays
from lmmrec.models.base import ModelInputs


def co_occurrence_graph(train: sp.csr_matrix, n_neighbours: int) -> sp.csr_matrix:
    """Each user's ``n_neighbours`` users with the most items in common.

    Args:
        train: binary ``[U, I]`` training matrix.
        n_neighbours: k, neighbours kept per user (fewer when a user has fewer co-occurring users).

    Returns:
        ``[U, U]`` float32 CSR matrix (sorted column indices); entry ``(u, v)`` is the number of
        items both ``u`` and ``v`` interacted with, for the kept neighbours ``v`` of ``u``.
    """
    binary = (train.tocsr() != 0).astype(np.int32)
    counts = (binary @ binary.T).tocoo()  # [U, U] co-occurrence counts, C = R R^T
    off_diagonal = counts.row != counts.col
    rows, cols, values = (
        counts.row[off_diagonal],
        counts.col[off_diagonal],
        counts.data[off_diagonal],
    )
    n_users = train.shape[0]
    order = _row_major_order(rows, cols, values, n_users)
    rows, cols, values = rows[order], cols[order], values[order]
    starts = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_users), out=starts[1:])
    rank = np.arange(len(rows)) - starts[rows]  # position within the user's sorted row
    keep = rank < n_neighbours
    graph = sp.csr_matrix(
        (values[keep].astype(np.float32), (rows[keep], cols[keep])), shape=(n_users, n_users)
    )
    graph.sort_indices()
    return graph


def _row_major_order(
    rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n_users: int
) -> np.ndarray:
    """Entry order by user, then count descending, then neighbour id.

    One argsort of a combined int64 key (10x faster than ``np.lexsort`` on the 7M entries of
    Baby); the keys are unique, so the order is fully determined.
    """
    top = int(values.max(initial=0))
    if n_users * n_users * (top + 1) >= 2**63:  # the key would overflow: sort by three keys
        return np.lexsort((cols, -values, rows))
    rows64 = rows.astype(np.int64)
    key = (rows64 * (top + 1) + (top - values.astype(np.int64))) * n_users + cols
    return np.argsort(key)


def cached_co_occurrence_graph(inputs: ModelInputs, n_neighbours: int) -> sp.csr_matrix:
    """:func:`co_occurrence_graph` of ``inputs.train`` through ``inputs.cache``, keyed by the
    content of the training matrix (``inputs.train_hash``, or a hash of the matrix itself)."""
    train = inputs.train
    source = inputs.train_hash or hash_arrays(train.indptr, train.indices)
    cached = inputs.cache.get_or_build(
        "user-cooccurrence",
        {"n_neighbours": n_neighbours},
        [source],
        lambda: _csr_tensors(co_occurrence_graph(train, n_neighbours)),
        lambda value: _is_csr_tensors(value, train.shape[0]),
    )
    return _csr_from_tensors(cached)


def _csr_tensors(matrix: sp.csr_matrix) -> dict[str, Any]:
    """A CSR matrix as the plain tensors the cache stores (it unpickles nothing else)."""
    return {
        "indptr": torch.from_numpy(matrix.indptr),
        "indices": torch.from_numpy(matrix.indices),
        "data": torch.from_numpy(matrix.data),
        "shape": list(matrix.shape),
    }


def _is_csr_tensors(value: object, n_users: int) -> bool:
    """Whether a value read from the cache is a ``[U, U]`` graph as :func:`_csr_tensors` writes."""
    if not isinstance(value, dict) or value.get("shape") != [n_users, n_users]:
        return False
    indptr, indices, data = (value.get(k) for k in ("indptr", "indices", "data"))
    if not all(isinstance(t, torch.Tensor) and t.ndim == 1 for t in (indptr, indices, data)):
        return False
    nnz = len(indices)
    return (
        len(indptr) == n_users + 1
        and len(data) == nnz
        and int(indptr[0]) == 0
        and int(indptr[-1]) == nnz
        and bool((indptr[1:] >= indptr[:-1]).all())
        and bool(((indices >= 0) & (indices < n_users)).all())
    )


def _csr_from_tensors(cached: dict[str, Any]) -> sp.csr_matrix:
    indptr, indices, data = (cached[k].numpy() for k in ("indptr", "indices", "data"))
    matrix = sp.csr_matrix((data, indices, indptr), shape=tuple(cached["shape"]))
    matrix.sort_indices()  # written sorted: a check only, unless the file was edited
    return matrix
