"""Item-item k-nearest-neighbour graphs from item features, built block-wise and cached.

LATTICE (Zhang et al., "Mining Latent Structures for Multimedia Recommendation", MM 2021) and
FREEDOM (Zhou & Shen, "A Tale of Two Graphs", MM 2023) link every item to the ``k`` items whose
features have the highest cosine similarity (the item itself included: its similarity is 1)
and normalise that adjacency with its row sums on both sides, :math:`\\hat S = D^{-1/2} S
D^{-1/2}`, :math:`D_{ii} = \\sum_j S_{ij}`, exactly as their code and MMRec do. The kNN
relation is not symmetric, so neither is :math:`\\hat S`. LATTICE keeps the similarities as
edge weights; FREEDOM uses binary edges (every entry is then :math:`1/k`).

MMRec computes the dense ``I x I`` similarity matrix (out of memory on Electronics: 63k items,
16 GB per matrix). :func:`knn_search` scores row blocks against all items and keeps the top ``k``
per block, so memory is ``O(block * I + I * k)``. Neighbour lists are cached under the content
hash of the features (:func:`cached_knn`): changed features never reuse a stale graph.

Graphs are kept as edge lists ``(rows, cols, values)`` (differentiable in ``values``) or as a
constant :class:`ItemGraph` (CSR matrix and its transpose).
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from lmmrec.cache import DerivedCache, tensor_hash
from lmmrec.models.graph import csr_pair, propagate_directed

BLOCK_ELEMENTS = 1 << 24  # similarity entries per block: 64 MB of float32
EdgeList = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def knn_search(
    features: torch.Tensor, k: int, block_elements: int = BLOCK_ELEMENTS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` cosine neighbours of every item, the item itself included.

    Args:
        features: ``[I, d]`` item features (any float dtype, any device; no gradient is taken).
        k: neighbours per item (capped at ``I``).
        block_elements: similarity entries computed at once (rows per block = this // I).

    Returns:
        ``(indices [I, k] int64, similarities [I, k] float32)``, each row sorted by decreasing
        similarity. Rows of zeros have similarity 0 to every item (MMRec divides by their zero
        norm and gets NaN).
    """
    n_items = features.shape[0]
    k = min(k, n_items)
    rows_per_block = max(1, block_elements // max(n_items, 1))
    with torch.no_grad():
        x = features.detach().float()  # [I, d], not copied when float32 already
        inverse_norm = x.norm(dim=1).clamp_min(1e-12).reciprocal()  # [I], as F.normalize
        values, indices = [], []
        starts = range(0, n_items, rows_per_block)
        # minutes on Electronics-sized catalogues: show progress when there are many blocks
        for start in tqdm(
            starts,
            desc="item kNN",
            unit="block",
            leave=False,
            disable=None if len(starts) > 8 else True,
        ):
            block = slice(start, start + rows_per_block)
            similarity = x[block] @ x.T  # [b, I]
            similarity.mul_(inverse_norm[block].unsqueeze(1)).mul_(inverse_norm)  # cosine
            top = similarity.topk(k, dim=1)
            values.append(top.values)
            indices.append(top.indices)
    return torch.cat(indices), torch.cat(values)


def cached_knn(
    cache: DerivedCache, features: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`knn_search` through ``cache``, keyed by the features' content hash and ``k``.

    Returns CPU tensors ``(indices [I, k], similarities [I, k])``.
    """

    def build() -> tuple[torch.Tensor, torch.Tensor]:
        indices, similarities = knn_search(features, k)
        return indices.cpu(), similarities.cpu()

    n_items = features.shape[0]

    def valid(value: object) -> bool:
        expected = (n_items, min(k, n_items))
        return (
            isinstance(value, tuple)
            and len(value) == 2
            and all(isinstance(t, torch.Tensor) and tuple(t.shape) == expected for t in value)
            and value[0].dtype == torch.int64
            and bool(((value[0] >= 0) & (value[0] < n_items)).all())
        )

    return cache.get_or_build(
        "item-knn", {"k": k, "metric": "cosine"}, [tensor_hash(features)], build, valid
    )


def knn_edges(indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge endpoints ``(rows [I*k], cols [I*k])`` of neighbour lists ``indices [I, k]``."""
    n_items, k = indices.shape
    rows = torch.arange(n_items, device=indices.device).repeat_interleave(k)
    return rows, indices.reshape(-1)


def normalize_edges(
    rows: torch.Tensor, cols: torch.Tensor, weights: torch.Tensor, n_items: int
) -> torch.Tensor:
    """Values of :math:`D^{-1/2} S D^{-1/2}` for the edges of ``S`` (``D`` = row sums of ``S``).

    Differentiable in ``weights``. Repeated ``(row, col)`` pairs add up, as in a dense sum of
    graphs. Rows whose sum is not positive get 0 (MMRec: 0 for a zero sum, NaN for a negative
    one, possible only if an item's top-k similarities are negative on balance).
    """
    degree = torch.zeros(n_items, dtype=weights.dtype, device=weights.device)
    degree = degree.index_add(0, rows, weights)  # [I]
    positive = degree > 0
    inv_sqrt = torch.where(positive, degree.clamp_min(1e-30).rsqrt(), torch.zeros_like(degree))
    return inv_sqrt[rows] * weights * inv_sqrt[cols]


def edge_propagate(edges: EdgeList, dense: torch.Tensor) -> torch.Tensor:
    """``S @ dense`` (``[I, D]`` -> ``[I, D]``) for edges whose values may carry gradients."""
    rows, cols, values = edges
    messages = values.unsqueeze(1) * dense.float().index_select(0, cols)  # [E, D]
    return torch.zeros_like(messages[: dense.shape[0]]).index_add(0, rows, messages)


class ItemGraph(nn.Module):
    """A constant item-item graph ``[I, I]``; ``graph(x)`` is ``S @ x`` with a cheap backward.

    The matrices are non-persistent buffers: they derive from data, so they move with the model
    (``.to(device)``) but stay out of checkpoints.
    """

    def __init__(self, edges: EdgeList, n_items: int) -> None:
        super().__init__()
        matrix, transpose = csr_pair(*edges, (n_items, n_items))
        self.register_buffer("matrix", matrix, persistent=False)
        self.register_buffer("transpose", transpose, persistent=False)

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        return propagate_directed(self.matrix, self.transpose, dense)
