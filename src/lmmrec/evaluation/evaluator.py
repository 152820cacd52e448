"""Full-ranking evaluation over all items (DESIGN.md: "every recommender ends in an inner product").

The model's final vectors are computed once (``model.embed``); users are then scored in blocks
(``user_vecs[block] @ item_vecs.T``), the items each user saw in training are masked, and
``torch.topk`` + ``gather`` give the hits: no Python loop over users, and no per-block re-run of the
model (MMRec redoes the whole graph forward for every block).

Masking protocol (default = MMRec's): only **training** items are excluded from the ranking, for
validation and for test. ``mask_valid_at_test=True`` also excludes validation items when ranking
for test (Cornac's protocol), so a known validation positive cannot take a test slot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from lmmrec.data.dataset import Dataset
from lmmrec.errors import DataError
from lmmrec.evaluation.metrics import ranking_metric_sums


def _block_flat_indices(matrix: sp.csr_matrix, rows: np.ndarray, n_cols: int) -> np.ndarray:
    """Flat indices ``r * n_cols + c`` of the non-zeros of ``matrix[rows]`` (``r`` block-local)."""
    sub = matrix[rows]
    local_rows = np.repeat(np.arange(len(rows), dtype=np.int64), np.diff(sub.indptr))
    return local_rows * n_cols + sub.indices.astype(np.int64)


@dataclass
class _Block:
    users: torch.Tensor  # [B] user indices
    masked: torch.Tensor  # [M] flat indices into the [B, I] score block
    relevant: torch.Tensor  # [R] flat indices of held-out items
    n_relevant: torch.Tensor  # [B]
    row_offsets: torch.Tensor  # [B, 1] = row * n_items


class Evaluator:
    """Ranks every item for every user who has held-out items in ``split``.

    Args:
        dataset: the data; ``split`` is ``"valid"`` or ``"test"``.
        ks: cut-offs K.
        mask_valid_at_test: for ``split="test"``, also mask validation items (see module doc).
        batch_size: users per scoring block.
        device: where the ranking runs (the vectors are moved there).
    """

    def __init__(
        self,
        dataset: Dataset,
        split: str,
        ks: list[int] | tuple[int, ...] = (5, 10, 20, 50),
        *,
        mask_valid_at_test: bool = False,
        batch_size: int = 2048,
        device: torch.device | str = "cpu",
    ) -> None:
        if split not in ("valid", "test"):
            raise DataError(f"evaluation split must be 'valid' or 'test', got {split!r}")
        self.split = split
        self.ks = sorted(set(ks))
        if self.ks[-1] > dataset.n_items:
            raise DataError(f"K={self.ks[-1]} exceeds the number of items ({dataset.n_items})")
        self.n_items = dataset.n_items
        self.device = torch.device(device)
        held_out = dataset.split(split)
        seen = dataset.train
        if split == "test" and mask_valid_at_test:
            seen = (seen + dataset.valid).tocsr()
            seen.data[:] = 1.0
        users = np.flatnonzero(np.diff(held_out.indptr) > 0)
        self.n_users = len(users)
        if self.n_users == 0:
            raise DataError(f"dataset {dataset.name!r}: the {split} split has no users to evaluate")
        self._blocks = [
            _Block(
                users=torch.from_numpy(rows).to(self.device),
                masked=torch.from_numpy(_block_flat_indices(seen, rows, self.n_items)).to(
                    self.device
                ),
                relevant=torch.from_numpy(_block_flat_indices(held_out, rows, self.n_items)).to(
                    self.device
                ),
                n_relevant=torch.from_numpy(np.diff(held_out[rows].indptr)).to(self.device),
                row_offsets=(torch.arange(len(rows), device=self.device) * self.n_items)[:, None],
            )
            for rows in np.array_split(users, max(1, -(-len(users) // batch_size)))
        ]

    @torch.inference_mode()
    def evaluate(self, user_vecs: torch.Tensor, item_vecs: torch.Tensor) -> dict[str, float]:
        """Mean metrics over the split's users from final vectors ``[U, D]`` and ``[I, D]``.

        Returns:
            ``{"recall@20": 0.071, "ndcg@20": ..., ...}`` for every metric and K.
        """
        user_vecs = user_vecs.to(self.device, torch.float32)
        item_vecs_t = item_vecs.to(self.device, torch.float32).T.contiguous()  # [D, I]
        k_max = self.ks[-1]
        totals: dict[str, torch.Tensor] = {}
        for block in self._blocks:
            scores = user_vecs[block.users] @ item_vecs_t  # [B, I]
            scores.view(-1)[block.masked] = -torch.inf
            top = scores.topk(k_max, dim=1, sorted=True).indices  # [B, K_max]
            flat_top = top + block.row_offsets  # [B, K_max] flat indices into the block
            hits = torch.isin(flat_top, block.relevant).float()  # [B, K_max]
            for name, value in ranking_metric_sums(hits, block.n_relevant, self.ks).items():
                totals[name] = totals.get(name, 0.0) + value
        return {name: float(total) / self.n_users for name, total in totals.items()}
