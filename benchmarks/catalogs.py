"""Synthetic datasets with item content (images on disk, texts) for the encoder benchmarks.

Timing an encoder needs real image files and texts of realistic length, not real products:
``content_dataset`` writes ``n_items`` images (random colour blocks, ``image_size`` px, PNG or
JPEG) and titles of 12-20 words, and draws interactions with Amazon-like popularity (item
probability proportional to ``rank ** -0.8``, so popular items recur within a batch, as they do
in Baby), about 8 per user, split at random 8:1:1. Right for speed and memory, not for accuracy.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from lmmrec.data.catalog import ItemCatalog
from lmmrec.data.dataset import Dataset
from lmmrec.data.splits import random_split

WORDS = [
    "soft",
    "cotton",
    "baby",
    "blanket",
    "bottle",
    "warmer",
    "organic",
    "stroller",
    "car",
    "seat",
    "cover",
    "toy",
    "teether",
    "bib",
    "pacifier",
    "diaper",
    "bag",
    "crib",
    "sheet",
    "swaddle",
    "wrap",
    "monitor",
    "gate",
    "carrier",
    "bouncer",
    "rocker",
    "bath",
    "tub",
    "spoon",
    "cup",
    "snack",
    "storage",
    "pink",
    "blue",
    "green",
    "grey",
    "white",
    "natural",
    "bamboo",
    "muslin",
    "plush",
    "musical",
]


def _write_image(args: tuple[Path, int, int, str]) -> None:
    path, seed, size, suffix = args
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    image = Image.fromarray(blocks).resize((size, size), Image.Resampling.NEAREST)
    image.save(path, quality=90) if suffix == ".jpg" else image.save(path)


def content_dataset(
    folder: Path,
    n_items: int,
    *,
    image_size: int = 96,
    suffix: str = ".png",
    seed: int = 0,
    workers: int = 2,
) -> Dataset:
    """Write (or reuse) a synthetic dataset of ``n_items`` items with content in ``folder``."""
    folder = Path(folder)
    if (folder / "dataset.json").is_file():
        return Dataset.load(folder)
    rng = np.random.default_rng(seed)
    n_users = int(2.76 * n_items)  # Amazon Baby: 19,445 users, 7,050 items
    popularity = np.arange(1, n_items + 1, dtype=np.float64) ** -0.8
    popularity = rng.permutation(popularity / popularity.sum())
    per_user = rng.integers(5, 12, n_users)
    users = np.repeat(np.arange(n_users), per_user)
    items = rng.choice(n_items, size=len(users), p=popularity)
    pairs = np.unique(users.astype(np.int64) * n_items + items)
    users, items = pairs // n_items, pairs % n_items
    dataset = Dataset.from_interactions(
        users,
        items,
        random_split(users, seed=seed),
        name=f"synthetic-{n_items}",
        where="benchmarks/catalogs.py",
        n_users=n_users,
        n_items=n_items,
    )
    (folder / "images").mkdir(parents=True, exist_ok=True)
    names = [f"images/{i}{suffix}" for i in range(n_items)]
    jobs = [
        (folder / name, seed * 1_000_003 + i, image_size, suffix) for i, name in enumerate(names)
    ]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_write_image, jobs, chunksize=64))
    texts = [" ".join(rng.choice(WORDS, rng.integers(12, 21))) for _ in range(n_items)]
    dataset.catalog = ItemCatalog(texts=texts, images=names, root=folder)
    dataset.save(folder)
    return Dataset.load(folder)
