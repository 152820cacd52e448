"""Item cold-start evaluation: the warm and the cold items, each ranked in a pool of its own.

MMRec's protocol ranks every item by the vectors the model learned. An item without a training
interaction (a *cold* item; on the demo shop, the new items whose interactions all come after
training) then has ID parameters trained, if at all, only as a sampled negative, so the model
buries it: on the demo shop, half of the held-out interactions are with its 140 new items, and
they take at most 0.02% of the top-20 slots of any model there (benchmarks/README.md, "The new
items of the demo shop"; ``negatives: trained`` keeps them out of the negatives). A content
model can place such an item from its features alone, as the service places a new item
(:func:`lmmrec.models.cold_start.content_item_vectors`). But those vectors lack the ID part the
warm items' vectors carry, so their scores are on another scale, and one ranking of both
measures how the two scales happen to compare rather than how well either pool is ranked. As
WarpRec's cold/warm candidate pools do, :func:`evaluate_pools` therefore ranks each pool on its
own (``Evaluator(items=...)``):

* ``all``: every item by its learned vector (MMRec's protocol, what training reports);
* ``warm``: the items with training interactions, learned vectors;
* ``cold``: the items without, by their learned vectors.

Each *placement* of the cold items (``{name: [C, D] vectors}``: ``content`` for the model's own
content part, ``mapped`` for a ridge map fitted on the warm items,
:mod:`lmmrec.models.content_map`) adds a ``cold`` row ranked by those vectors and an ``all`` row
where they replace the cold items' learned vectors: the lists a service that places its new items
that way would show (``scored_by`` names the placement).

A pool whose split holds no held-out item is left out (a dataset without cold items has no cold
rows); in a pool of fewer than K items, ``metric@K`` ranks all of them, without the evaluator's
warning (``n_items`` says so). Shapes: U users, I items, D the vectors' width, C cold items.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from lmmrec.data.dataset import Dataset
from lmmrec.evaluation.evaluator import Evaluator


@dataclass(frozen=True)
class PoolResult:
    """The metrics of one candidate pool.

    Attributes:
        pool: ``"all"``, ``"warm"`` or ``"cold"``.
        scored_by: ``"learned"`` (the model's item vectors) or the name of a placement of the
            cold items (``"content"``, ``"mapped"``).
        n_items: candidate items in the pool.
        n_users: users evaluated (those with held-out items in the pool).
        metrics: ``{"recall@20": ..., ...}``, means over those users.
    """

    pool: str
    scored_by: str
    n_items: int
    n_users: int
    metrics: dict[str, float]


def evaluate_pools(
    dataset: Dataset,
    split: str,
    user_vecs: torch.Tensor,
    item_vecs: torch.Tensor,
    placements: dict[str, torch.Tensor] | None = None,
    *,
    ks: list[int] | tuple[int, ...] = (5, 10, 20, 50),
    mask_valid_at_test: bool = False,
    batch_size: int = 2048,
    device: torch.device | str = "cpu",
) -> list[PoolResult]:
    """Rank ``split`` in the pools ``all``, ``warm`` and ``cold`` (module doc).

    Args:
        user_vecs: ``[U, D]`` final user vectors.
        item_vecs: ``[I, D]`` final item vectors as learned.
        placements: ``{name: [C, D]}`` vectors of the cold items in item order (the rows of
            :meth:`Dataset.cold_items`) by each way of placing them, in the order of the rows.
        ks, mask_valid_at_test, batch_size, device: as for :class:`Evaluator`.
    """
    cold = dataset.cold_items()
    placements = placements or {}
    for name, vectors in placements.items():
        if vectors.shape != (int(cold.sum()), item_vecs.shape[1]):
            raise ValueError(
                f"placement {name!r}: expected [{int(cold.sum())}, {item_vecs.shape[1]}] (one "
                f"row per cold item), got {list(vectors.shape)}"
            )
    cold_rows = torch.from_numpy(cold).to(item_vecs.device)
    placed = {"learned": item_vecs}
    for name, vectors in placements.items():
        placed[name] = item_vecs.clone()
        placed[name][cold_rows] = vectors.to(item_vecs)
    held_out = dataset.split(split)
    results = []
    for pool, items in (("all", None), ("warm", ~cold), ("cold", cold)):
        in_pool = held_out if items is None else held_out[:, np.flatnonzero(items)]
        if in_pool.nnz == 0:
            continue
        with warnings.catch_warnings():  # a pool smaller than K: its n_items says so
            warnings.simplefilter("ignore", UserWarning)
            evaluator = Evaluator(
                dataset,
                split,
                ks,
                mask_valid_at_test=mask_valid_at_test,
                batch_size=batch_size,
                device=device,
                items=items,
            )
        scorings = ["learned"] if pool == "warm" else list(placed)
        for scored_by in scorings:
            results.append(
                PoolResult(
                    pool=pool,
                    scored_by=scored_by,
                    n_items=evaluator.n_items,
                    n_users=evaluator.n_users,
                    metrics=evaluator.evaluate(user_vecs, placed[scored_by]),
                )
            )
    return results
