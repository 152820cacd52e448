"""SLMRec's per-modality LightGCN encoder, also MMGCL's: an ID branch and one branch per
modality propagated on the user-item graph, fused by a linear read-out.

Dimensions: U users, I items, D embedding size, M modalities, d_m size of modality m.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmmrec.models.base import ItemFeatures
from lmmrec.models.bipartite import BipartiteGraph
from lmmrec.models.embeddings import id_embeddings
from lmmrec.models.graph import propagate_directed
from lmmrec.models.item_features import ConstantInputMemo


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


def _plus(total: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    return x if total is None else total + x


def gather_rows(branches: list[torch.Tensor], index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` of every branch, side by side: ``[len(index), sum of widths]``."""
    return torch.cat([b.index_select(0, index) for b in branches], dim=1)
