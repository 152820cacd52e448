"""Graph operators against dense brute-force computations."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from lmmrec.models.graph import (
    layer_sum,
    mean_of_layers,
    normalized_adjacency,
    propagate,
    to_torch_csr,
)


def _train() -> sp.csr_matrix:
    dense = np.array([[1, 0, 1, 0], [0, 0, 1, 1], [1, 0, 0, 0]], dtype=np.float32)
    return sp.csr_matrix(dense)


def test_normalized_adjacency_matches_dense_formula() -> None:
    r = _train().toarray()
    n_users, n_items = r.shape
    a = np.zeros((n_users + n_items, n_users + n_items), dtype=np.float64)
    a[:n_users, n_users:] = r
    a[n_users:, :n_users] = r.T
    degree = a.sum(1)
    inv = np.divide(1.0, np.sqrt(degree), out=np.zeros_like(degree), where=degree > 0)  # item 1: 0
    expected = inv[:, None] * a * inv[None, :]
    got = normalized_adjacency(_train()).toarray()
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(got, got.T)
    # hand check: user 0 (degree 2) - item 0 (degree 2): 1 / sqrt(2 * 2)
    assert got[0, n_users + 0] == pytest.approx(0.5)


def test_propagate_forward_and_backward_match_dense() -> None:
    adjacency = normalized_adjacency(_train())
    sparse = to_torch_csr(adjacency)
    dense = torch.from_numpy(adjacency.toarray())
    x = torch.randn(7, 3, generator=torch.Generator().manual_seed(0), requires_grad=True)
    y = torch.randn(7, 3, generator=torch.Generator().manual_seed(1))
    out = propagate(sparse, x)
    torch.testing.assert_close(out, dense @ x)
    (out * y).sum().backward()
    torch.testing.assert_close(x.grad, dense.T @ y)


@pytest.mark.parametrize("n_layers", [0, 1, 3])
def test_layer_sum_forward_and_backward_match_the_dense_polynomial(n_layers: int) -> None:
    adjacency = normalized_adjacency(_train())
    sparse = to_torch_csr(adjacency)
    a = torch.from_numpy(adjacency.toarray())
    x = torch.randn(7, 3, generator=torch.Generator().manual_seed(0), requires_grad=True)
    y = torch.randn(7, 3, generator=torch.Generator().manual_seed(1))
    polynomial = sum(torch.linalg.matrix_power(a, k) for k in range(n_layers + 1))  # [7, 7]
    out = layer_sum(sparse, x, n_layers, scale=0.5)
    torch.testing.assert_close(out, 0.5 * polynomial @ x)
    (out * y).sum().backward()
    torch.testing.assert_close(x.grad, 0.5 * polynomial.T @ y)
    x.grad = None
    (mean_of_layers(sparse, x, n_layers) * y).sum().backward()
    torch.testing.assert_close(x.grad, polynomial.T @ y / (n_layers + 1))


def test_layer_sum_leaves_its_input_untouched() -> None:
    sparse = to_torch_csr(normalized_adjacency(_train()))
    x = torch.randn(7, 3, generator=torch.Generator().manual_seed(0))
    before = x.clone()
    layer_sum(sparse, x, 0)  # K = 0 returns a copy, never x itself
    layer_sum(sparse, x, 2)
    torch.testing.assert_close(x, before)
