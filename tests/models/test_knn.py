"""Item-item kNN graphs against dense brute force; cache keys follow the feature content."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lmmrec.cache import DerivedCache
from lmmrec.models.graph import csr_pair, propagate_directed
from lmmrec.models.knn import (
    ItemGraph,
    cached_knn,
    edge_propagate,
    knn_edges,
    knn_search,
    normalize_edges,
)


def _features(n: int = 37, d: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def _dense_knn(features: torch.Tensor, k: int, weighted: bool) -> np.ndarray:
    """MMRec's construction, dense: cosine similarities, top-k per row, D^-1/2 S D^-1/2."""
    x = features.double().numpy()
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    similarity = unit @ unit.T
    adjacency = np.zeros_like(similarity)
    for i, row in enumerate(similarity):
        top = np.argsort(-row)[:k]
        adjacency[i, top] = row[top] if weighted else 1.0
    degree = adjacency.sum(1)
    return adjacency / np.sqrt(degree)[:, None] / np.sqrt(degree)[None, :]


def _to_dense(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, n: int) -> np.ndarray:
    dense = np.zeros((n, n))
    np.add.at(dense, (rows.numpy(), cols.numpy()), values.detach().double().numpy())
    return dense


def test_block_wise_search_matches_brute_force() -> None:
    features = _features()
    unit = torch.nn.functional.normalize(features.double(), dim=1)
    expected = (unit @ unit.T).topk(4, dim=1)
    for block_elements in (40, 37 * 5, 1 << 20):  # 1 row, 5 rows, everything per block
        indices, similarity = knn_search(features, 4, block_elements=block_elements)
        assert indices.shape == similarity.shape == (37, 4)
        assert torch.equal(indices, expected.indices)
        torch.testing.assert_close(similarity.double(), expected.values, rtol=1e-5, atol=1e-6)
    assert (indices[:, 0] == torch.arange(37)).all()  # every item is its own first neighbour


def test_k_is_capped_and_zero_rows_stay_finite() -> None:
    features = _features(n=3)
    features[1] = 0
    indices, similarity = knn_search(features, 10)
    assert indices.shape == (3, 3)
    assert torch.isfinite(similarity).all()
    assert (similarity[1] == 0).all()


def test_normalised_graphs_match_the_dense_formula() -> None:
    features = _features()
    indices, similarity = knn_search(features, 5)
    rows, cols = knn_edges(indices)
    for weighted in (True, False):  # LATTICE keeps similarities, FREEDOM binary edges
        weights = similarity.reshape(-1) if weighted else torch.ones(len(rows))
        values = normalize_edges(rows, cols, weights, 37)
        np.testing.assert_allclose(
            _to_dense(rows, cols, values, 37), _dense_knn(features, 5, weighted), atol=1e-6
        )
    binary = normalize_edges(rows, cols, torch.ones(len(rows)), 37)
    torch.testing.assert_close(binary, torch.full_like(binary, 1 / 5))  # FREEDOM: all 1/k


def test_repeated_edges_add_up_and_propagation_matches_dense() -> None:
    rows, cols = torch.tensor([0, 0, 1, 2, 2]), torch.tensor([1, 1, 2, 0, 2])
    values = torch.tensor([0.5, 0.25, 1.0, 2.0, -1.0], requires_grad=True)
    dense = torch.from_numpy(_to_dense(rows, cols, values, 3)).float()
    assert dense[0, 1] == 0.75
    x = torch.randn(3, 4, requires_grad=True)
    weight = torch.randn(3, 4)
    out = edge_propagate((rows, cols, values), x)
    torch.testing.assert_close(out, dense @ x)
    (out * weight).sum().backward()
    torch.testing.assert_close(x.grad, dense.T @ weight)
    assert values.grad is not None and values.grad.abs().sum() > 0  # values keep gradients
    x.grad = None
    graph = ItemGraph((rows, cols, values), 3)
    out = graph(x)
    torch.testing.assert_close(out, dense @ x)
    (out * weight).sum().backward()
    torch.testing.assert_close(x.grad, dense.T @ weight)
    matrix, transpose = csr_pair(rows, cols, values, (3, 3))
    torch.testing.assert_close(propagate_directed(matrix, transpose, x), dense @ x)
    torch.testing.assert_close(transpose.to_dense(), dense.T)


def test_cache_is_keyed_by_feature_content(tmp_path: Path) -> None:
    cache = DerivedCache(tmp_path)
    features = _features()
    first = cached_knn(cache, features, 4)
    again = cached_knn(DerivedCache(tmp_path), features.clone(), 4)  # new process, same content
    assert len(list(tmp_path.glob("item-knn-*.pt"))) == 1
    assert torch.equal(first[0], again[0])
    changed = features.clone()
    changed[3] = -changed[3]
    rebuilt = cached_knn(cache, changed, 4)
    assert len(list(tmp_path.glob("item-knn-*.pt"))) == 2  # a new key, never the stale graph
    assert torch.equal(rebuilt[0], knn_search(changed, 4)[0])
    assert not torch.equal(rebuilt[0], first[0])
    cached_knn(cache, features, 5)
    assert len(list(tmp_path.glob("item-knn-*.pt"))) == 3  # k is part of the key
