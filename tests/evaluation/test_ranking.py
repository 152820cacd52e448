"""The one ranker against ``torch.topk`` and a stable descending sort, ties included."""

from __future__ import annotations

import os
import select
import signal

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from lmmrec.errors import DataError
from lmmrec.evaluation.ranking import Ranker, top_k


def _reference(
    user_vecs: torch.Tensor, item_vecs: torch.Tensor, seen: sp.csr_matrix | None, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values, items)`` of a stable descending sort: equal scores keep the lower item first."""
    scores = user_vecs @ item_vecs.T
    if seen is not None:
        scores[torch.from_numpy(seen.toarray() != 0)] = -torch.inf
    ranked = torch.sort(scores, dim=1, descending=True, stable=True)
    return ranked.values[:, :k], ranked.indices[:, :k]


def _exact_vectors(n: int, dim: int, gen: torch.Generator) -> torch.Tensor:
    """Multiples of 1/16 below 20 in size: every inner product is exact in float32, so any
    summation order (the ranker's blocks, a reference product) gives the same scores."""
    return torch.randint(-300, 301, (n, dim), generator=gen).float() / 16


def _seen(n_users: int, n_items: int, density: float, seed: int) -> sp.csr_matrix:
    return sp.random(n_users, n_items, density=density, format="csr", random_state=seed)


@pytest.mark.parametrize(
    ("n_users", "n_items", "k"),
    [(300, 5000, 50), (50, 40, 10), (100, 3000, 1), (64, 1000, 200), (80, 20000, 20)],
)
def test_matches_torch_topk(n_users: int, n_items: int, k: int) -> None:
    gen = torch.Generator().manual_seed(n_items)
    users = _exact_vectors(n_users, 16, gen)
    items = _exact_vectors(n_items, 16, gen)
    seen = _seen(n_users, n_items, 0.05, seed=k)
    got = top_k(users, items, k, seen=seen, block_size=37)
    scores = users @ items.T
    scores[torch.from_numpy(seen.toarray() != 0)] = -torch.inf
    expected = scores.topk(k, dim=1)
    assert torch.equal(got.scores, expected.values)
    # equal scores (rare here) are the only place where torch.topk's items may differ
    distinct = (expected.values[:, 1:] != expected.values[:, :-1]).all(dim=1)
    assert torch.equal(got.items[distinct], expected.indices[distinct])
    assert torch.equal(got.items, _reference(users, items, seen, k)[1])


@pytest.mark.parametrize(("n_items", "k"), [(5000, 50), (3000, 1), (997, 20), (40, 10)])
def test_planted_ties_go_to_the_lower_item(n_items: int, k: int) -> None:
    # integer vectors: most scores tie, within the top K and across its boundary
    gen = torch.Generator().manual_seed(k)
    users = torch.randint(-2, 3, (120, 4), generator=gen).float()
    items = torch.randint(-2, 3, (n_items, 4), generator=gen).float()
    seen = _seen(120, n_items, 0.05, seed=1)
    got = top_k(users, items, k, seen=seen, block_size=50)
    values, indices = _reference(users, items, seen, k)
    assert torch.equal(got.scores, values)
    assert torch.equal(got.items, indices)
    # the scores are torch.topk's (which orders equal scores arbitrarily)
    scores = users @ items.T
    scores[torch.from_numpy(seen.toarray() != 0)] = -torch.inf
    assert torch.equal(got.scores, scores.topk(k, dim=1).values)


def test_ties_planted_only_at_the_boundary() -> None:
    # distinct scores except for one value repeated in many groups at the K-th place
    n_items, k = 4000, 20
    scores = torch.randn(3, n_items).double().abs().float() + 10.0
    scores[:, 3000:] = torch.linspace(0, 1, 1000)  # below everything
    scores[:, : k + 30] = torch.arange(k + 30, 0, -1).float()[None, :] + 20.0
    scores[:, k - 1 :: 97] = scores[0, k - 1]  # the K-th value, spread over many groups
    items = torch.eye(n_items)  # one-hot: user vector = its scores
    got = top_k(scores, items, k)
    values, indices = _reference(scores, items, None, k)
    assert torch.equal(got.scores, values)
    assert torch.equal(got.items, indices)


def test_users_with_fewer_unseen_items_than_k_get_minus_inf() -> None:
    users = torch.randn(4, 3)
    items = torch.randn(30, 3)
    seen = sp.csr_matrix(np.ones((4, 30)))
    seen[0, :5] = 0
    seen.eliminate_zeros()
    got = top_k(users, items, 8, seen=seen)
    assert torch.isfinite(got.scores[0]).sum() == 5
    assert set(got.items[0, :5].tolist()) == set(range(5))
    assert torch.isinf(got.scores[1:]).all()
    assert torch.equal(got.items[1], torch.arange(8))  # ties among -inf: lower items first


def test_users_and_candidates_select_rows_and_items() -> None:
    gen = torch.Generator().manual_seed(7)
    users = _exact_vectors(20, 8, gen)
    items = _exact_vectors(3000, 8, gen)
    seen = _seen(20, 3000, 0.1, seed=2)
    rows = np.array([4, 0, 19])
    candidates = np.arange(2999, 0, -3)  # [1000], any order
    got = Ranker(items).top_k(users, 10, users=rows, seen=seen, candidates=candidates)
    scores = users[rows] @ items.T
    scores[torch.from_numpy(seen[rows].toarray() != 0)] = -torch.inf
    allowed = torch.full_like(scores, -torch.inf)
    allowed[:, candidates] = scores[:, candidates]
    values, indices = torch.sort(allowed, dim=1, descending=True, stable=True)
    assert torch.equal(got.scores, values[:, :10])
    assert torch.equal(got.items, indices[:, :10])


def test_bad_arguments_name_the_fix() -> None:
    ranker = Ranker(torch.randn(30, 4))
    with pytest.raises(DataError, match="k=31 is out of range"):
        ranker.top_k(torch.randn(2, 4), 31)
    with pytest.raises(DataError, match="k=0"):
        ranker.top_k(torch.randn(2, 4), 0)
    with pytest.raises(DataError, match="same model"):
        ranker.top_k(torch.randn(2, 5), 3)
    with pytest.raises(DataError, match="one row per user"):
        ranker.top_k(torch.randn(2, 4), 3, seen=sp.csr_matrix((3, 30)))


def test_one_thread_products_give_the_same_ranking() -> None:
    # one thread, blocks of 64 and a last block of 8 (numpy's BLAS, item-major): same ranking
    gen = torch.Generator().manual_seed(11)
    users, items = _exact_vectors(200, 16, gen), _exact_vectors(4000, 16, gen)
    seen = _seen(200, 4000, 0.02, seed=3)  # 200 = 3 x 64 + 8
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = top_k(users, items, 20, seen=seen, block_size=64)
    finally:
        torch.set_num_threads(threads)
    values, indices = _reference(users, items, seen, 20)
    assert torch.equal(single.scores, values)
    assert torch.equal(single.items, indices)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_parallel_blocks_rank_as_one_thread_does(threads: int) -> None:
    # on the CPU, T torch threads rank every T-th block on a worker thread of its own
    gen = torch.Generator().manual_seed(threads)
    users = _exact_vectors(230, 16, gen)
    items = _exact_vectors(3000, 16, gen)
    seen = _seen(230, 3000, 0.05, seed=threads)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():  # as the evaluator calls it: the workers follow
            got = top_k(users, items, 20, seen=seen, block_size=40)
            one_block = top_k(users[:30], items, 20, seen=seen[:30], block_size=64)
    finally:
        torch.set_num_threads(before)
    values, indices = _reference(users, items, seen, 20)
    assert torch.equal(got.scores, values) and torch.equal(got.items, indices)
    assert torch.equal(one_block.items, indices[:30])  # one block, split across the threads


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_ranks_with_its_own_workers() -> None:
    # the parent's pool threads do not exist in a forked child: it must not wait on them
    gen = torch.Generator().manual_seed(5)
    users, items = _exact_vectors(120, 16, gen), _exact_vectors(3000, 16, gen)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        expected = top_k(users, items, 10, block_size=40)  # the parent's pool now exists
        reader, writer = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            same = torch.equal(top_k(users, items, 10, block_size=40).items, expected.items)
            os.write(writer, b"1" if same else b"0")
            os._exit(0)
        os.close(writer)
        if not select.select([reader], [], [], 60)[0]:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
            pytest.fail("the forked child hung, waiting for its parent's ranking workers")
        _, status = os.waitpid(child, 0)
        assert os.read(reader, 1) == b"1" and status == 0
    finally:
        torch.set_num_threads(before)


def _tied_case(n_items: int) -> tuple[torch.Tensor, torch.Tensor, sp.csr_matrix]:
    """Integer vectors (most scores tie, within the top K and across it) and seen items."""
    gen = torch.Generator().manual_seed(n_items)
    users = torch.randint(-2, 3, (90, 4), generator=gen).float()
    items = torch.randint(-2, 3, (n_items, 4), generator=gen).float()
    return users, items, _seen(90, n_items, 0.05, seed=3)


def test_the_device_path_ranks_as_the_cpu_selection_does() -> None:
    # off the CPU (a GPU) the ranker selects with torch over unique keys; run that path here by
    # dropping the CPU item rows (whose presence picks the numba selection)
    users, items, seen = _tied_case(3000)
    ranker = Ranker(items)
    cpu = ranker.top_k(users, 25, seen=seen, block_size=32)
    ranker._item_rows = None
    device_path = ranker.top_k(users, 25, seen=seen, block_size=32)
    values, indices = _reference(users, items, seen, 25)
    for got in (cpu, device_path):
        assert torch.equal(got.scores, values) and torch.equal(got.items, indices)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_ranking_on_cuda_matches_the_cpu() -> None:
    users, items, seen = _tied_case(3000)
    on_cuda = top_k(users.cuda(), items.cuda(), 25, seen=seen)
    values, indices = _reference(users, items, seen, 25)
    assert on_cuda.items.device.type == "cuda"
    assert torch.equal(on_cuda.scores.cpu(), values) and torch.equal(on_cuda.items.cpu(), indices)
