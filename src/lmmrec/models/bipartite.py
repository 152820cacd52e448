"""The user-item graph as edge lists, with per-edge weighted message passing whose weights take
gradients (GRCN's learned edge weights; SLMRec's and MMGCL's LightGCN propagation).

Dimensions: U users, I items, E training interactions, D or C row widths.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from lmmrec.models.graph import csr_tensor, sparse_matmul


class BipartiteGraph(nn.Module):
    """The training interactions as edge lists, with per-edge weighted message passing.

    Edge ``e`` joins user ``users[e]`` and item ``items[e]`` (CSR order of the training matrix).
    Messages into users use weights ``w [E]``: ``out_u = sum_e w_e x_items[items[e]]`` (a ``[U, I]``
    matrix with the CSR structure of ``train``); messages into items use ``[I, U]`` with the
    structure of ``train.T``. Weights may differ per direction and receive gradients (GRCN).

    Args:
        train: binary ``[U, I]`` CSR training matrix.
    """

    def __init__(self, train: sp.csr_matrix) -> None:
        super().__init__()
        train = train.tocsr(copy=True)  # sorted below; the caller's matrix stays as it is
        train.sort_indices()
        n_users, n_items = train.shape
        users = np.repeat(np.arange(n_users), np.diff(train.indptr))
        items = train.indices.astype(np.int64)
        by_item = np.lexsort((users, items))  # edge ids in (item, user) order: CSR of train.T
        item_indptr = np.zeros(n_items + 1, dtype=np.int64)
        np.cumsum(np.bincount(items, minlength=n_items), out=item_indptr[1:])
        self.n_users, self.n_items = n_users, n_items
        # gathers index with int64; the sparse kernels take int32 indices natively (graph.py)
        index = np.int32 if 2 * len(items) < 2**31 else np.int64
        buffers = {
            "users": users.astype(np.int64),
            "items": items,
            "by_item": by_item.astype(np.int64),
            "user_crow": train.indptr.astype(index),
            "user_col": items.astype(index),
            "item_crow": item_indptr.astype(index),
            "item_col": users[by_item].astype(index),
        }
        for name, array in buffers.items():
            self.register_buffer(name, torch.from_numpy(array), persistent=False)

    @property
    def n_edges(self) -> int:
        return int(self.users.shape[0])

    def to_users(self, weights: torch.Tensor) -> torch.Tensor:
        """``[U, I]`` sparse CSR matrix with ``weights [E]`` on the edges."""
        return csr_tensor(self.user_crow, self.user_col, weights, (self.n_users, self.n_items))

    def to_items(self, weights: torch.Tensor) -> torch.Tensor:
        """``[I, U]`` sparse CSR matrix with ``weights [E]`` on the edges."""
        shape = (self.n_items, self.n_users)
        return csr_tensor(self.item_crow, self.item_col, weights[self.by_item], shape)

    def normalized_weights(self, keep: torch.Tensor | None = None) -> torch.Tensor:
        r"""Edge weights of :math:`D^{-1/2} A D^{-1/2}` (LightGCN Eq. 7) for the kept edges.

        Args:
            keep: ``[E]`` bool mask of the edges that stay (edge dropout); all when ``None``.
        """
        ones = torch.ones(self.n_edges, device=self.users.device)
        if keep is not None:
            ones = ones * keep
        user_degree = ones.new_zeros(self.n_users).index_add_(0, self.users, ones)
        item_degree = ones.new_zeros(self.n_items).index_add_(0, self.items, ones)
        scale = (user_degree[self.users] * item_degree[self.items]).clamp_min(1).rsqrt()
        return ones * scale

    def message(self, into: str, weights: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """Weighted sum of neighbour rows: ``into="users"``: ``[I, D] -> [U, D]``; ``"items"``:
        ``[U, D] -> [I, D]``. Differentiable in ``weights [E]`` and ``source``."""
        return _EdgeMessages.apply(self, into, weights, source)

    def scores(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Per-edge inner products ``<users[u_e], items[i_e]> [E]`` of ``[U, C]`` and ``[I, C]``,
        differentiable in both."""
        return _EdgeScores.apply(self, users, items)

    def dots(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """:meth:`scores` without gradients: one sampled product (SDDMM) on the edge pattern,
        several times faster than gathering ``[E, C]`` rows."""
        pattern = self.to_users(torch.ones_like(self.users, dtype=torch.float32))
        product = torch.sparse.sampled_addmm(pattern, users.float(), items.float().T, beta=0)
        return product.values()


class _EdgeMessages(torch.autograd.Function):
    """``out = W(weights) @ source`` on the user-item graph, with gradients for both inputs.

    ``d out / d source`` is the transposed direction with the same weights; ``d out / d w_e`` is
    the inner product of the output gradient at the receiving node and the source row.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        graph: BipartiteGraph,
        into: str,
        weights: torch.Tensor,
        source: torch.Tensor,
    ) -> torch.Tensor:
        ctx.graph, ctx.into = graph, into
        ctx.save_for_backward(weights, source)
        matrix = graph.to_users(weights) if into == "users" else graph.to_items(weights)
        return sparse_matmul(matrix, source.float())

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[None, None, torch.Tensor | None, torch.Tensor | None]:
        graph, into = ctx.graph, ctx.into
        weights, source = ctx.saved_tensors
        grad = grad.contiguous()
        grad_weights = grad_source = None
        if ctx.needs_input_grad[2]:
            grad_weights = graph.dots(*((grad, source) if into == "users" else (source, grad)))
        if ctx.needs_input_grad[3]:
            transpose = graph.to_items(weights) if into == "users" else graph.to_users(weights)
            grad_source = sparse_matmul(transpose, grad)
        return None, None, grad_weights, grad_source


class _EdgeScores(torch.autograd.Function):
    """``s_e = <users[u_e], items[i_e]>``; the backward is two sparse products with the edge
    gradients as values (``dL/d users = G @ items``, ``dL/d items = G^T @ users``)."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        graph: BipartiteGraph,
        users: torch.Tensor,
        items: torch.Tensor,
    ) -> torch.Tensor:
        ctx.graph = graph
        ctx.save_for_backward(users, items)
        return graph.dots(users, items)

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[None, torch.Tensor | None, torch.Tensor | None]:
        graph = ctx.graph
        users, items = ctx.saved_tensors
        grad_users = grad_items = None
        if ctx.needs_input_grad[1]:
            grad_users = sparse_matmul(graph.to_users(grad), items.float())
        if ctx.needs_input_grad[2]:
            grad_items = sparse_matmul(graph.to_items(grad), users.float())
        return None, grad_users, grad_items
