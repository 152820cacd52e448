"""Per-user train/valid/test splits, vectorised (no Python loop over users).

Labels follow MMRec's ``x_label``: 0 = train, 1 = valid, 2 = test.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from lmmrec.errors import DataError

TRAIN, VALID, TEST = 0, 1, 2
SPLIT_NAMES = ("train", "valid", "test")
SplitKind = Literal["random", "temporal", "loo"]


def _positions_in_user(users: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows visited in ``order`` (grouped by user), each row's position and its user's count.

    Returns ``(position, count)`` aligned with the original rows, both ``[N]`` int64.
    """
    sorted_users = users[order]
    counts = np.bincount(sorted_users)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    position = np.empty(len(users), dtype=np.int64)
    position[order] = np.arange(len(users)) - starts[sorted_users]
    return position, counts[users]


def mmrec_held_out_lengths(counts: np.ndarray) -> np.ndarray:
    """MMRec's per-user valid (= test) length: 1 below 10 interactions, else ``int(0.2 n) // 2``.

    Users with fewer than 3 interactions keep everything in train (0).
    """
    held = np.where(counts < 10, 1, (0.2 * counts).astype(np.int64) // 2)
    return np.where(counts < 3, 0, held)


def _assign(users: np.ndarray, order: np.ndarray, held_out: np.ndarray | None) -> np.ndarray:
    position, counts = _positions_in_user(users, order)
    held = mmrec_held_out_lengths(counts) if held_out is None else held_out[users]
    labels = np.full(len(users), TRAIN, dtype=np.int8)
    labels[position >= counts - 2 * held] = VALID
    labels[position >= counts - held] = TEST
    return labels


def random_split(users: np.ndarray, seed: int = 2022) -> np.ndarray:
    """MMRec's random per-user 8:1:1 split (``preprocessing/1splitting.ipynb``).

    Each user's interactions are shuffled; users with fewer than 10 keep all but 2 in train, then
    1 valid and 1 test; others get ``int(0.2 n) // 2`` valid and as many test.

    Args:
        users: ``[N]`` user index per interaction.
        seed: seeds the shuffle; the same seed gives the same split.

    Returns:
        ``[N]`` int8 labels (0 train, 1 valid, 2 test).
    """
    users = np.asarray(users, dtype=np.int64)
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(users))
    order = shuffled[np.argsort(users[shuffled], kind="stable")]
    return _assign(users, order, None)


def temporal_split(users: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """Per-user temporal split with MMRec's lengths: each user's latest interactions are held out.

    Ties in time keep file order.
    """
    users = np.asarray(users, dtype=np.int64)
    order = np.lexsort((np.arange(len(users)), np.asarray(timestamps), users))
    return _assign(users, order, None)


def leave_one_out(
    users: np.ndarray, timestamps: np.ndarray | None = None, seed: int = 2022
) -> np.ndarray:
    """Leave-one-out: per user the last interaction is test, the one before it valid.

    "Last" is by time when ``timestamps`` is given, otherwise in a seeded random order. Users with
    fewer than 3 interactions keep everything in train.
    """
    users = np.asarray(users, dtype=np.int64)
    if timestamps is None:
        rng = np.random.default_rng(seed)
        shuffled = rng.permutation(len(users))
        order = shuffled[np.argsort(users[shuffled], kind="stable")]
    else:
        order = np.lexsort((np.arange(len(users)), np.asarray(timestamps), users))
    counts = np.bincount(users)
    return _assign(users, order, np.where(counts < 3, 0, 1))


def make_split(
    kind: SplitKind, users: np.ndarray, timestamps: np.ndarray | None, seed: int, where: str
) -> np.ndarray:
    """Dispatch on the split name used in configs and the CLI."""
    if kind == "random":
        return random_split(users, seed)
    if kind == "temporal" and timestamps is None:
        raise DataError(
            f"{where}: a temporal split needs a timestamp column; name one (time_col=...) or use "
            "the random split"
        )
    if kind == "temporal":
        return temporal_split(users, timestamps)
    if kind == "loo":
        return leave_one_out(users, timestamps, seed)
    raise DataError(f"{where}: unknown split {kind!r}; use one of random, temporal, loo")
