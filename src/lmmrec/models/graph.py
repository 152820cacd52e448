"""Graph operators shared by graph recommenders: the normalised user-item adjacency and its
propagation with an efficient backward pass.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch


def normalized_adjacency(train: sp.csr_matrix) -> sp.csr_matrix:
    r"""Symmetric normalised bipartite adjacency :math:`\hat A = D^{-1/2} A D^{-1/2}`.

    :math:`A = \begin{pmatrix} 0 & R \\ R^\top & 0 \end{pmatrix}` over users then items (LightGCN,
    He et al., SIGIR 2020, Eq. 7). Nodes of degree 0 get 0 rows instead of MMRec's ``1e-7``
    epsilon (which yields the same zeros after multiplication by an all-zero row).

    Args:
        train: binary ``[U, I]`` interaction matrix.

    Returns:
        ``[U + I, U + I]`` float32 CSR matrix, symmetric.
    """
    n_users, n_items = train.shape
    r = train.astype(np.float32)
    adjacency = sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float32)
    adjacency.resize((n_users + n_items, n_users + n_items))
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    inv_sqrt = np.zeros_like(degree)
    np.power(degree, -0.5, out=inv_sqrt, where=degree > 0)
    scale = sp.diags(inv_sqrt.astype(np.float32))
    normalized = (scale @ adjacency @ scale).tocsr()
    normalized.sort_indices()
    return normalized


def to_torch_csr(matrix: sp.csr_matrix) -> torch.Tensor:
    """A scipy CSR matrix as a ``torch.sparse_csr`` float32 tensor (on the CPU)."""
    matrix = matrix.tocsr()
    with warnings.catch_warnings():  # "sparse CSR support is in beta": we rely on matmul only
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(matrix.indptr.astype(np.int64)),
            torch.from_numpy(matrix.indices.astype(np.int64)),
            torch.from_numpy(matrix.data.astype(np.float32)),
            size=matrix.shape,
            check_invariants=False,  # built by scipy from a valid CSR matrix
        )


class _SymmetricSparseMatmul(torch.autograd.Function):
    """``A @ X`` for a constant symmetric sparse ``A``; the backward is ``A @ grad``.

    Autograd's generic sparse backward transposes ``A`` on every call; for a symmetric matrix the
    transpose is ``A`` itself, which makes forward + backward about 3x faster on CPU.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, adjacency: torch.Tensor, dense: torch.Tensor
    ) -> torch.Tensor:
        ctx.adjacency = adjacency
        return adjacency @ dense

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[None, torch.Tensor]:
        return None, ctx.adjacency @ grad.contiguous()


def propagate(adjacency: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """One propagation step ``adjacency @ dense`` (``[N, N]`` sparse, symmetric x ``[N, D]``).

    Runs in float32 whatever the autocast state (sparse kernels have no bf16 path on all
    devices), and differentiates only with respect to ``dense``.
    """
    return _SymmetricSparseMatmul.apply(adjacency, dense.float())
