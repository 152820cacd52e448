"""DualGNN's user co-occurrence graph against a brute-force pairwise count, and its cache."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from lmmrec.cache import DerivedCache
from lmmrec.models.base import ModelInputs
from lmmrec.models.user_graph import cached_co_occurrence_graph, co_occurrence_graph


def _random_train(seed: int, n_users: int = 30, n_items: int = 12) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    return sp.csr_matrix((rng.random((n_users, n_items)) < 0.25).astype(np.float32))


def _brute_force(train: sp.csr_matrix, k: int) -> dict[int, list[tuple[int, int]]]:
    """MMRec's script: compare every pair of users' item sets; keep the k largest counts."""
    items = [set(train[u].indices) for u in range(train.shape[0])]
    graph = {}
    for u in range(len(items)):
        counts = [(v, len(items[u] & items[v])) for v in range(len(items)) if v != u]
        ranked = sorted((c for c in counts if c[1] > 0), key=lambda c: (-c[1], c[0]))
        graph[u] = sorted(ranked[:k])
    return graph


def test_top_k_co_occurrence_matches_brute_force() -> None:
    for seed in range(3):
        train = _random_train(seed)
        for k in (1, 3, 40):
            got = co_occurrence_graph(train, k)
            assert got.shape == (30, 30)
            for u, expected in _brute_force(train, k).items():
                row = got[u]
                pairs = zip(row.indices.tolist(), row.data.astype(int).tolist(), strict=True)
                assert list(pairs) == expected


def test_hand_checked_case_and_tie_break() -> None:
    # user 0 shares 2 items with user 1, 1 item with users 2 and 3; user 4 shares nothing
    train = sp.csr_matrix(
        np.array(
            [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 1]],
            dtype=np.float32,
        )
    )
    graph = co_occurrence_graph(train, 2).toarray()
    assert graph[0].tolist() == [0, 2, 1, 0, 0]  # users 2 and 3 tie at 1: the lower id stays
    assert graph[3].tolist() == [1, 0, 1, 0, 0]
    assert graph[4].tolist() == [0, 0, 0, 0, 0]  # no co-occurring user: an empty row
    assert np.all(np.diag(co_occurrence_graph(train, 5).toarray()) == 0)


class _CountingCache(DerivedCache):
    """An in-memory cache that records the sources of every lookup."""

    def __init__(self) -> None:
        super().__init__(None)
        self.sources: list[list[str]] = []

    def get_or_build(self, kind, params, sources, build, valid=None):  # type: ignore[no-untyped-def]
        self.sources.append(list(sources))
        return super().get_or_build(kind, params, sources, build, valid)


def test_cache_is_keyed_by_the_training_matrix_content() -> None:
    cache = _CountingCache()
    first, second = _random_train(0), _random_train(1)

    def graph(train: sp.csr_matrix, k: int = 3) -> sp.csr_matrix:
        return cached_co_occurrence_graph(ModelInputs(*train.shape, train=train, cache=cache), k)

    a, b = graph(first), graph(second)
    assert cache.sources[0] != cache.sources[1]  # different content: different key and graph
    assert (a != b).nnz > 0
    builds = len(cache._memory)
    assert (graph(first.copy()) != a).nnz == 0  # same content (no train_hash given): cached
    assert len(cache._memory) == builds
    assert (graph(first, k=2) != a).nnz > 0  # k is part of the key
