"""Building blocks shared by the graph-based multi-modal recommenders (MMGCN, GRCN, DualGNN,
SLMRec, MMGCL): feature checks, edge-weighted message passing on the user-item graph, and the
per-modality LightGCN encoder of SLMRec and MMGCL.

Dimensions: U users, I items, N = U + I nodes, E training interactions, D embedding size,
M modalities, d_m size of modality m.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from lmmrec.errors import FeatureError
from lmmrec.models.base import ItemFeatures, ModelInputs
from lmmrec.models.graph import propagate_directed, sparse_matmul
from lmmrec.models.mm_layers import id_embeddings


def modality_dims(inputs: ModelInputs, model: str) -> dict[str, int]:
    """``{modality: d_m}`` of the features the model is built for; at least one is required."""
    if not inputs.item_feats:
        raise FeatureError(
            f"model {model!r} needs item features: give it at least one modality "
            "(features=NAME with a feature set of the dataset)"
        )
    return inputs.feature_dims


def check_features(item_feats: ItemFeatures, dims: dict[str, int], model: str) -> None:
    """Raise :class:`FeatureError` unless ``item_feats`` has the modalities and sizes ``dims``."""
    got = {m: int(t.shape[-1]) for m, t in item_feats.items()}
    if got != dims:
        raise FeatureError(
            f"model {model!r} was built for item features {dims} but was given {got}; "
            "pass the same modalities and sizes as at build time"
        )


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


def csr_tensor(
    crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]
) -> torch.Tensor:
    """A float32 ``torch.sparse_csr`` matrix on a fixed, valid structure (no checks)."""
    with warnings.catch_warnings():  # "sparse CSR support is in beta": we rely on matmul only
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            crow, col, values.float(), size=shape, check_invariants=False
        )


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


def paired_square_penalty(
    table: torch.Tensor, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
) -> torch.Tensor:
    """MMGCN's and GRCN's ID regulariser in MMRec: the mean over ``[2B, D]`` of
    ``e_u^2 + e_i^2``, each user paired once with its positive and once with its negative item.

    Args:
        table: ``[N, D]`` node embeddings; ``users``, ``pos``, ``neg``: ``[B]`` row indices.
    """
    total = 2 * table[users].pow(2).sum() + table[pos].pow(2).sum() + table[neg].pow(2).sum()
    return total / (2 * len(users) * table.shape[1])


class ModalityLightGCN(nn.Module):
    """SLMRec's encoder (Tao et al., TMM 2022, Sec. III-A), also used by MMGCL.

    Branch 0 propagates the ID embeddings ``[U + I, D]``; branch ``m`` propagates the user ID
    embeddings next to the item features of modality ``m``, L2-normalised and projected to ``D``.
    The read-out fuses the concatenated branches: ``user = W_u [z_u^0 .. z_u^M] + b_u``.

    All branches start from the same user rows, and the graph is bipartite, so at every other
    layer one side is the same in every branch (users at even layers, items at odd ones): it is
    propagated once, the other side once per branch, with the same result as propagating the
    ``M + 1`` branches separately and a third fewer sparse products (``M = 2``).

    Args:
        dims: ``{modality: d_m}`` in a fixed order (the branch order).
        size: D.
        n_layers: LightGCN layers per branch.
    """

    def __init__(
        self, n_users: int, n_items: int, dims: dict[str, int], size: int, n_layers: int
    ) -> None:
        super().__init__()
        self.n_users, self.size, self.n_layers = n_users, size, n_layers
        self.modalities = list(dims)
        self.user_embedding, self.item_embedding = id_embeddings(n_users, n_items, size)
        self.projections = nn.ModuleDict({m: nn.Linear(d, size) for m, d in dims.items()})
        self.inverse_norms = {m: ConstantInputMemo(_inverse_row_norms) for m in dims}
        width = size * (len(dims) + 1)
        self.read_user = nn.Linear(width, size)
        self.read_item = nn.Linear(width, size)
        for layer in (*self.projections.values(), self.read_user, self.read_item):
            nn.init.xavier_uniform_(layer.weight)

    def item_inputs(self, item_feats: ItemFeatures) -> list[torch.Tensor]:
        """Layer-0 item rows of every branch: ``[I, D]`` each, ID branch first.

        ``W norm(x) + b`` is computed as ``(W x) / |x| + b``, without a normalised copy of the
        (large) feature matrix; the norms of frozen features are computed once.
        """
        projected = []
        for m in self.modalities:
            x, layer = item_feats[m], self.projections[m]
            scale = self.inverse_norms[m](x)  # [I, 1]
            projected.append(torch.addcmul(layer.bias, F.linear(x, layer.weight), scale))
        return [self.item_embedding, *projected]

    def propagate(
        self, graph: BipartiteGraph, weights: torch.Tensor, item_inputs: list[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """LightGCN mean of layers per branch (Eq. 8 of LightGCN): ``([U, D], ...), ([I, D], ...)``.

        Args:
            graph: the user-item graph; ``weights``: its ``[E]`` edge weights (normalised;
                constant, no gradient reaches them).
            item_inputs: layer-0 item rows of each branch, all next to the shared user rows.
        """
        weights = weights.detach()
        to_users, to_items = graph.to_users(weights), graph.to_items(weights)  # once per pass

        def message(into: str, x: torch.Tensor) -> torch.Tensor:
            if into == "users":
                return propagate_directed(to_users, to_items, x)
            return propagate_directed(to_items, to_users, x)

        # running sums of the layers, split into the shared part and the per-branch parts
        users, items = self.user_embedding, list(item_inputs)  # users shared, items per branch
        shared_users, shared_items = users, None
        branch_users, branch_items = [None] * len(items), list(items)
        for layer in range(1, self.n_layers + 1):
            if layer % 2:  # users now differ per branch; items are the same in every branch
                users, items = [message("users", x) for x in items], message("items", users)
                branch_users = [_plus(t, u) for t, u in zip(branch_users, users, strict=True)]
                shared_items = _plus(shared_items, items)
            else:  # users are the same again; items differ per branch
                users, items = message("users", items), [message("items", u) for u in users]
                shared_users = shared_users + users
                branch_items = [t + i for t, i in zip(branch_items, items, strict=True)]
        scale = 1 / (self.n_layers + 1)
        return (
            [_plus(b, shared_users) * scale for b in branch_users],  # [U, D] each
            [_plus(shared_items, b) * scale for b in branch_items],  # [I, D] each
        )

    def read(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fused vectors ``([., D], [., D])`` from branch-concatenated rows ``[., (M+1) D]``."""
        return self.read_user(users), self.read_item(items)


def _inverse_row_norms(x: torch.Tensor) -> torch.Tensor:
    """``1 / max(|x_i|, 1e-12)`` ``[N, 1]`` for ``x [N, d]`` (the scale of ``F.normalize``)."""
    return torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(1e-12).reciprocal()


class ConstantInputMemo:
    """``fn(x)``, remembered for an input that takes no gradient and reused while the same tensor
    comes back unmodified (same object, same in-place version counter).

    Frozen item features come back every training step; what depends on them alone (row norms)
    need not be recomputed. The storage address is compared too (``x.data = ...`` swaps it
    without an in-place version bump). Inputs that require gradients (end-to-end encoder
    outputs) are always recomputed, and values computed in inference mode are not kept
    (autograd could not save them for a later training step).
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.fn = fn
        self._input: weakref.ref[torch.Tensor] | None = None
        self._state: tuple[int, int] = (-1, 0)  # (version counter, storage address)
        self._value: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad or x.is_inference() or torch.is_inference_mode_enabled():
            return self.fn(x)
        state = (x._version, x.data_ptr())
        if self._input is None or self._input() is not x or self._state != state:
            with torch.no_grad():
                self._value = self.fn(x)
            self._input, self._state = weakref.ref(x), state
        return self._value


def _plus(total: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    return x if total is None else total + x


def gather_rows(branches: list[torch.Tensor], index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` of every branch, side by side: ``[len(index), sum of widths]``."""
    return torch.cat([b.index_select(0, index) for b in branches], dim=1)
