"""From raw interaction codes to clean, re-indexed, split interactions.

The steps every raw reader shares (``formats.table`` and ``formats.amazon``): keep each
(user, item) pair once (the earliest by time, else the first seen), iterative k-core, re-index the
survivors to ``0..n-1`` in sorted raw-id order (deterministic whatever the input order), split per
user.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lmmrec.data.kcore import k_core_mask
from lmmrec.data.splits import SplitKind, make_split
from lmmrec.errors import DataError


@dataclass(frozen=True)
class PreparedInteractions:
    """``[N]`` user and item indices with split labels, the raw id of every index, and counts."""

    users: np.ndarray
    items: np.ndarray
    labels: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    counts: dict[str, Any]


def first_of_each_pair(
    users: np.ndarray, items: np.ndarray, n_items: int, times: np.ndarray | None
) -> np.ndarray:
    """Sorted row numbers keeping one row per (user, item): earliest by time, ties by row order."""
    rows = np.arange(len(users))
    order = rows if times is None else np.lexsort((rows, times))
    keys = users.astype(np.int64) * n_items + items
    _, first = np.unique(keys[order], return_index=True)
    return np.sort(order[first])


def reindex(codes: np.ndarray, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``codes`` (indices into ``raw``) renumbered 0..n-1 in sorted raw-id order, and the ids."""
    kept, inverse = np.unique(codes, return_inverse=True)
    names = np.asarray(raw)[kept].astype(str)
    order = np.argsort(names, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank[inverse], names[order]


def prepare_interactions(
    users: np.ndarray,
    items: np.ndarray,
    times: np.ndarray | None,
    user_raw: np.ndarray,
    item_raw: np.ndarray,
    *,
    k_core: int,
    split: SplitKind,
    seed: int,
    where: str,
) -> PreparedInteractions:
    """Deduplicate, k-core filter, re-index and split raw-coded interactions.

    Args:
        users, items: ``[N]`` codes, indices into ``user_raw`` / ``item_raw``.
        times: ``[N]`` sortable times, or ``None``.
        k_core: minimum interactions per kept user and item (``<= 1``: no filtering).
        split, seed: the split rule (``lmmrec.data.splits.make_split``).
        where: the source, for error messages.

    Raises:
        DataError: when nothing survives the k-core filter, or a split rule needs times.
    """
    rows = first_of_each_pair(users, items, len(item_raw), times)
    repeated = len(users) - len(rows)
    users, items = users[rows], items[rows]
    times = None if times is None else times[rows]
    before = {
        "users": len(np.unique(users)),
        "items": len(np.unique(items)),
        "interactions": len(rows),
    }
    keep = k_core_mask(users, items, k_core)
    if not keep.any():
        raise DataError(
            f"{where}: no interactions survive the {k_core}-core filter ({len(rows)} before); "
            "lower k_core"
        )
    users, user_ids = reindex(users[keep], user_raw)
    items, item_ids = reindex(items[keep], item_raw)
    labels = make_split(split, users, None if times is None else times[keep], seed, where)
    counts = {
        "repeated_pairs_dropped": repeated,
        "before_filtering": before,
        "after_filtering": {
            "users": len(user_ids),
            "items": len(item_ids),
            "interactions": int(keep.sum()),
        },
    }
    return PreparedInteractions(users, items, labels, user_ids, item_ids, counts)
