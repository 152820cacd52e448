r"""MMGCN: one graph convolution network per modality on the user-item graph, outputs averaged.

Wei, Wang, Nie, He, Hong, Chua. "MMGCN: Multi-modal Graph Convolution Network for Personalized
Recommendation of Micro-video." ACM MM 2019; as implemented in MMRec (``src/models/mmgcn.py``:
mean aggregation, ID embeddings added, concatenating combination):

* inputs, per modality m: user preferences :math:`P^m` ``[U, d_m]`` and item features, projected
  to ``latent_sizes[m]`` when listed (MMRec: image 4096 -> 256) or used as they are (text, 384);
  :math:`x^{(0)} = \mathrm{norm}([P^m; W_0 x^m + b_0])` ``[N, d_m]``;
* per layer l (Eq. 1 and 5 as numbered in MMRec's comments): aggregation
  :math:`h = \mathrm{lrelu}(D^{-1} A\, x^{(l)} W_l)` (mean over neighbours); combination with
  the ID embedding :math:`E` ``[N, D]``, :math:`\hat x = \mathrm{lrelu}(L_l x^{(l)} + b) + E` and
  :math:`x^{(l+1)} = \mathrm{lrelu}(G_l [h \| \hat x] + g)` ``[N, D]``;
* representation: the mean over modalities of :math:`x^{(L)}` (MMRec; a sum would only scale
  the scores by :math:`M^2`), score its inner product;
* loss: BPR + :math:`\lambda` (mean squared ID embeddings of the batch's users and items + mean
  squared preferences, per modality).

MMRec leaves the ID embeddings and the preferences out of the optimiser (plain tensors, not
parameters: they keep their random initial values, and its regulariser has no effect); here they
are learned, as in the paper. MMRec's string flag ``concate = 'False'`` is truthy, so its
combination concatenates, as here. Its layers are always three (``n_layers`` is not read).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from lmmrec.data.sampling import Batch
from lmmrec.models.base import ItemFeatures, ModelConfig, ModelInputs, Recommender
from lmmrec.models.graph import propagate_directed, to_torch_csr
from lmmrec.models.losses import bpr_loss
from lmmrec.models.mm_blocks import check_features, modality_dims, paired_square_penalty
from lmmrec.models.registry import register


class MMGCNConfig(ModelConfig):
    embedding_size: int = Field(
        128, gt=0, description="D, ID embedding and layer size (LMM4Rec MMGCN.yaml: 128; MMRec 64)"
    )
    n_layers: int = Field(3, gt=0, description="GCN layers per modality (LMM4Rec/MMRec: 3)")
    latent_sizes: dict[str, int] = Field(
        {"image": 256},
        description="modalities projected before the first layer, and their size (MMRec: image "
        "256; other modalities enter at their own size)",
    )
    reg_weight: float = Field(
        1e-3, ge=0, description="lambda of the regulariser (LMM4Rec grid 1e-3, 1e-2, 1e-1; first)"
    )


def _neighbour_mean(train: sp.csr_matrix) -> sp.csr_matrix:
    """``D^{-1} A`` ``[N, N]``: each node's mean over its neighbours (0 rows for isolated nodes)."""
    adjacency = sp.bmat([[None, train], [train.T, None]], format="csr", dtype=np.float32)
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    inverse = np.divide(1.0, degree, out=np.zeros_like(degree), where=degree > 0)
    return (sp.diags(inverse.astype(np.float32)) @ adjacency).tocsr()


class _ModalityGCN(nn.Module):
    """The GCN of one modality: input projection, then ``n_layers`` aggregate-combine layers."""

    def __init__(
        self, n_users: int, feature_size: int, latent: int | None, size: int, n_layers: int
    ) -> None:
        super().__init__()
        width = latent or feature_size
        self.projection = nn.Linear(feature_size, latent) if latent else None
        self.preference = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_users, width)))
        widths = [width] + [size] * (n_layers - 1)
        self.convs = nn.ParameterList(
            nn.Parameter(nn.init.xavier_normal_(torch.empty(w, w))) for w in widths
        )
        self.linears = nn.ModuleList(nn.Linear(w, size) for w in widths)
        self.combines = nn.ModuleList(nn.Linear(w + size, size) for w in widths)
        for layer in (*self.linears, *self.combines):
            nn.init.xavier_normal_(layer.weight)

    def forward(
        self,
        mean: tuple[torch.Tensor, torch.Tensor],
        features: torch.Tensor,
        ids: torch.Tensor,
    ) -> torch.Tensor:
        """``features [I, d]`` and ID embeddings ``[N, D]`` -> this modality's ``[N, D]``.

        Args:
            mean: the neighbour-mean operator ``D^-1 A`` and its transpose (sparse ``[N, N]``).
        """
        items = self.projection(features) if self.projection is not None else features
        # norm([P; f]) row-wise, without differentiating through the constant feature rows
        x = torch.cat([F.normalize(self.preference, dim=1), F.normalize(items, dim=1)])
        for conv, linear, combine in zip(self.convs, self.linears, self.combines, strict=True):
            h = F.leaky_relu(propagate_directed(*mean, x @ conv))  # [N, d_l], Eq. 1
            x_hat = F.leaky_relu(linear(x)) + ids  # [N, D], Eq. 5
            # G [h | x_hat] + g, as two products instead of copying the concatenation
            width = h.shape[1]
            joined = torch.addmm(combine.bias, h, combine.weight[:, :width].T)
            x = F.leaky_relu(joined.addmm_(x_hat, combine.weight[:, width:].T))  # [N, D]
        return x


@register
class MMGCN(Recommender):
    """Per-modality GCNs with ID embeddings, averaged into one user and one item vector."""

    name = "mmgcn"
    config_class = MMGCNConfig
    config: MMGCNConfig
    needs_features = True

    def __init__(self, config: MMGCNConfig, inputs: ModelInputs) -> None:
        super().__init__(config, inputs)
        self.dims = modality_dims(inputs, self.name)
        size = config.embedding_size
        self.id_embedding = nn.Parameter(
            nn.init.xavier_normal_(torch.empty(self.n_users + self.n_items, size))
        )
        self.gcns = nn.ModuleDict(
            {
                m: _ModalityGCN(self.n_users, d, config.latent_sizes.get(m), size, config.n_layers)
                for m, d in self.dims.items()
            }
        )
        mean = _neighbour_mean(inputs.train)  # D^-1 A
        self.register_buffer("mean", to_torch_csr(mean), persistent=False)
        self.register_buffer("mean_t", to_torch_csr(mean.T.tocsr()), persistent=False)

    def _forward(self, item_feats: ItemFeatures) -> torch.Tensor:
        check_features(item_feats, self.dims, self.name)
        mean = (self.mean, self.mean_t)
        out = [gcn(mean, item_feats[m], self.id_embedding) for m, gcn in self.gcns.items()]
        return torch.stack(out).mean(0)  # [N, D]

    def embed(self, item_feats: ItemFeatures) -> tuple[torch.Tensor, torch.Tensor]:
        out = self._forward(item_feats)
        return out[: self.n_users], out[self.n_users :]

    def loss(self, batch: Batch, item_feats: ItemFeatures) -> torch.Tensor:
        out = self._forward(item_feats)
        items = batch.pos_items + self.n_users, batch.neg_items + self.n_users
        user, pos, neg = out[batch.users], out[items[0]], out[items[1]]  # [B, D]
        ranking = bpr_loss((user * pos).sum(-1), (user * neg).sum(-1))
        id_penalty = paired_square_penalty(self.id_embedding, batch.users, *items)
        preference = sum(  # mean of squares over the whole table, as one reduction
            torch.linalg.vector_norm(gcn.preference).square() / gcn.preference.numel()
            for gcn in self.gcns.values()
        )
        return ranking + self.config.reg_weight * (id_penalty + preference)
