"""The user and item ID embedding tables of the graph recommenders, initialised as MMRec does."""

from __future__ import annotations

import torch
from torch import nn


def id_embeddings(n_users: int, n_items: int, size: int) -> tuple[nn.Parameter, nn.Parameter]:
    """User and item ID embeddings ``[U, D]`` and ``[I, D]``, each Xavier-uniform initialised
    (MMRec's ``xavier_uniform_`` on its ``nn.Embedding`` weights), users drawn first."""
    users = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_users, size)))
    return users, nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_items, size)))
