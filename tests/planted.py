"""Tiny generated datasets with a planted structure (never real data), for fixtures and tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from lmmrec.data.catalog import ItemCatalog
from lmmrec.data.dataset import Dataset
from lmmrec.data.splits import TRAIN, VALID, random_split


def planted_dataset(
    n_users: int = 60, n_items: int = 40, n_groups: int = 4, seed: int = 0, per_user: int = 12
) -> Dataset:
    """Users and items fall into ``n_groups`` clusters; users mostly pick items of their cluster.

    A recommender that learns anything ranks in-cluster items first, so metrics well above random
    are expected after a little training.
    """
    rng = np.random.default_rng(seed)
    user_group = rng.integers(0, n_groups, n_users)
    item_group = np.arange(n_items) % n_groups
    users, items = [], []
    for u in range(n_users):
        same = np.flatnonzero(item_group == user_group[u])
        other = np.flatnonzero(item_group != user_group[u])
        n_same = per_user - 2
        chosen = np.concatenate(
            [rng.choice(same, n_same, replace=False), rng.choice(other, 2, replace=False)]
        )
        users += [u] * len(chosen)
        items += chosen.tolist()
    users_arr, items_arr = np.array(users), np.array(items)
    labels = random_split(users_arr, seed=seed)
    return Dataset.from_interactions(
        users_arr,
        items_arr,
        labels,
        name="planted",
        where="planted fixture",
        n_users=n_users,
        n_items=n_items,
    )


def planted_content(
    folder: Path,
    group_words: Sequence[str],
    noise_words: Sequence[str],
    image: Callable[[int, int, np.random.Generator], bytes],
) -> Dataset:
    """:func:`planted_dataset` saved in ``folder`` with a catalogue: item ``i`` of group
    ``g = i % 4`` has the text ``"<group_words[g]> <noise> <noise>"`` and the PNG
    ``image(g, i, rng)``; item 5 has no image and item 6 no text (one seeded ``rng`` draws the
    noise words and whatever ``image`` draws, item by item)."""
    dataset = planted_dataset()
    rng = np.random.default_rng(3)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    texts, images = [], []
    for item in range(dataset.n_items):
        group = item % len(group_words)
        noise = rng.choice(noise_words, 2)
        texts.append("" if item == 6 else f"{group_words[group]} {noise[0]} {noise[1]}")
        if item == 5:
            images.append(None)
            continue
        (folder / f"images/{item}.png").write_bytes(image(group, item, rng))
        images.append(f"images/{item}.png")
    dataset.catalog = ItemCatalog(texts=texts, images=images, root=folder)
    dataset.save(folder)
    return Dataset.load(folder)


def with_cold_items(dataset: Dataset, cold: Sequence[int], to: int = VALID) -> Dataset:
    """``dataset`` with every training interaction of the ``cold`` items moved to split ``to``
    (``VALID`` or ``TEST``): items without training interactions, as new items are."""
    frame = dataset.interaction_frame()
    labels = frame["split"].to_numpy().copy()
    labels[np.isin(frame["item"].to_numpy(), cold) & (labels == TRAIN)] = to
    users, items = frame["user"].to_numpy(), frame["item"].to_numpy()
    return Dataset.from_interactions(
        users,
        items,
        labels,
        name=f"{dataset.name}-cold",
        where="planted fixture",
        n_users=dataset.n_users,
        n_items=dataset.n_items,
        catalog=dataset.catalog,
        root=dataset.root,
    )
