"""Synthetic datasets with item content (images on disk, texts) for the encoder benchmarks.

Timing an encoder needs real image files and texts of realistic length, not real products:
``content_dataset`` writes ``n_items`` images (random colour blocks, ``image_size`` px, PNG or
JPEG) and titles of 12-20 words, and draws interactions with Amazon-like popularity (item
probability proportional to ``rank ** -0.8``, so popular items recur within a batch, as they do
in Baby), about 8 per user, split at random 8:1:1. Right for speed and memory, not for accuracy.
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
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


# Random CLIPs (transformers' CLIPConfig): ViT-B/16's size (the paper's encoder, for the GPU
# benchmarks); a small one (2 layers a tower) and a narrow one of ViT-B/16's depth (12 layers a
# tower, 128 wide), whose costs a 2-core CPU can afford at a Baby-sized catalogue.
def _layers(width: int, layers: int, heads: int, image_size: int | None = None) -> dict[str, int]:
    """One tower's transformer sizes (MLP 4x as wide); a vision tower also gets its image size
    and 16 px patches."""
    tower = dict(
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
    )
    return tower if image_size is None else tower | dict(image_size=image_size, patch_size=16)


CLIP_SIZES: dict[str, dict[str, dict[str, int]]] = {
    "b16": {"text": _layers(512, 12, 8), "vision": _layers(768, 12, 12, image_size=224)},
    "small": {"text": _layers(128, 2, 4), "vision": _layers(128, 2, 4, image_size=96)},
    "deep": {"text": _layers(128, 12, 4), "vision": _layers(128, 12, 4, image_size=96)},
}
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def random_clip_folder(folder: Path, size: str = "b16") -> Path:
    """A random CLIP of ``size`` (:data:`CLIP_SIZES`) with a character-level BPE tokenizer,
    saved to ``folder`` (reused when it is there); load it with the spec ``clip:FOLDER``."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    if (folder / "config.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    tokens = [*LETTERS, *(c + "</w>" for c in LETTERS), "<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    eos = vocab["<|endoftext|>"]
    text = CLIP_SIZES[size]["text"] | dict(
        vocab_size=len(vocab),
        max_position_embeddings=77,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=eos,
        pad_token_id=eos,
    )
    torch.manual_seed(0)
    projection = 512 if size == "b16" else 128
    config = CLIPConfig(
        text_config=text, vision_config=CLIP_SIZES[size]["vision"], projection_dim=projection
    )
    CLIPModel(config).save_pretrained(folder)
    CLIPTokenizer.from_pretrained(folder).save_pretrained(folder)
    return folder


# users, items, interactions of the MMRec benchmark's Amazon Clothing (no interactions offline)
AMAZON_SHAPES = {"clothing": (39_387, 23_033, 278_677)}


def interactions_dataset(
    name: str, n_users: int, n_items: int, n_interactions: int, seed: int = 0
) -> Dataset:
    """Interactions only, drawn with Amazon-like popularity (module doc): every user has 5 or
    more (about ``n_interactions`` in all, fewer after duplicates go), split at random 8:1:1."""
    rng = np.random.default_rng(seed)
    popularity = np.arange(1, n_items + 1, dtype=np.float64) ** -0.8
    popularity = rng.permutation(popularity / popularity.sum())
    mean = n_interactions / n_users
    per_user = rng.integers(5, max(6, round(2 * mean - 4)), n_users)  # mean ~ n_inter / n_users
    users = np.repeat(np.arange(n_users), per_user)
    items = rng.choice(n_items, size=len(users), p=popularity)
    pairs = np.unique(users.astype(np.int64) * n_items + items)
    users, items = pairs // n_items, pairs % n_items
    return Dataset.from_interactions(
        users,
        items,
        random_split(users, seed=seed),
        name=name,
        where="benchmarks/catalogs.py",
        n_users=n_users,
        n_items=n_items,
    )


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
    dataset = interactions_dataset(f"synthetic-{n_items}", n_users, n_items, 8 * n_users, seed)
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
