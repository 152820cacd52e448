"""The built-in demo dataset: a small synthetic shop whose items have real images and texts.

Everything is generated deterministically from a :class:`DemoConfig` in a few seconds, and the
result is an ordinary :class:`~lmmrec.data.dataset.Dataset` saved in the ordinary folder format,
so every other part of lmmrec treats it like a real dataset.

Items have hidden attributes. Category (bottle, box, ball, shirt, mug, bag, hat, lamp) and main
colour (10 named colours) show in both modalities; the pattern (plain, stripes, dots, checks) is
visible **only** in the image; material, style and brand are named **only** in the text. Images are
RGB PNGs of the category's silhouette filled with the colour and pattern, with jittered position,
size, rotation and background, drawn at twice the size and reduced for anti-aliasing.

Users have hidden tastes: 1-2 categories, 1-3 colours, one pattern, 1-2 materials and one style.
Items have a power-law popularity scaled by a per-brand factor. Each user draws
``5 + lognormal`` items without replacement from ``softmax((taste match + log popularity) / T)``
with the Gumbel-top-k trick on one ``[n_users, n_items]`` score matrix.

New (cold-start) items: ``round(new_item_share * n_items)`` items (fewer only if fewer items were
drawn at all), chosen uniformly among those with at least one interaction, are declared new. Their
interactions must happen after training, so after MMRec's random split every train interaction
with a new item swaps labels with a held-out interaction of the same user with an old item; where
a user has no such interaction left, it is relabelled valid or test at random. Every user keeps at
least one train interaction (in the rare case that a user's draw holds only new items, the user's
best-scoring old item is added first), and every user keeps a valid and a test interaction, so
:meth:`Dataset.from_interactions` drops nothing.

Besides the usual files the folder holds ``images/<item index>.png`` and the hidden ground truth,
for probing encoders and checking models: ``attributes.parquet`` (row ``i``: item ``i``'s category,
colour, pattern, material, style, brand and ``new`` flag) and ``tastes.parquet`` (row ``u``: user
``u``'s liked categories, colours, pattern, materials and style).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from PIL import Image, ImageChops, ImageDraw

from lmmrec.data.catalog import ItemCatalog
from lmmrec.data.dataset import Dataset
from lmmrec.data.splits import TEST, TRAIN, VALID, random_split
from lmmrec.errors import ConfigError
from lmmrec.io import atomic_path
from lmmrec.paths import lmmrec_home

logger = logging.getLogger(__name__)

# Bump whenever the generator's output changes for the same config: it names the cache folder.
_VERSION = 1

_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (205, 40, 40),
    "orange": (240, 135, 30),
    "yellow": (240, 205, 45),
    "green": (60, 150, 65),
    "teal": (25, 140, 140),
    "blue": (40, 85, 205),
    "purple": (125, 60, 175),
    "pink": (240, 125, 175),
    "brown": (125, 80, 40),
    "black": (35, 35, 35),
}
_PATTERNS = ("plain", "stripes", "dots", "checks")
_MATERIALS_BY_CATEGORY: dict[str, tuple[str, ...]] = {
    "bottle": ("glass", "steel", "plastic", "bamboo"),
    "box": ("bamboo", "steel", "plastic", "leather"),
    "ball": ("leather", "plastic", "wool"),
    "shirt": ("cotton", "linen", "wool"),
    "mug": ("ceramic", "glass", "steel", "bamboo"),
    "bag": ("leather", "canvas", "cotton"),
    "hat": ("wool", "cotton", "linen", "canvas"),
    "lamp": ("ceramic", "glass", "steel", "bamboo"),
}
_CATEGORIES = tuple(_MATERIALS_BY_CATEGORY)
_MATERIALS = tuple(sorted({m for ms in _MATERIALS_BY_CATEGORY.values() for m in ms}))
_STYLES = ("classic", "modern", "vintage", "sporty", "minimalist", "rustic", "elegant", "playful")
_BRANDS = (
    "Northwind",
    "Maple & Co",
    "Sunfield",
    "Kestrel",
    "Oakridge",
    "Lumen",
    "Pebble",
    "Harbor",
    "Juniper",
    "Vesta",
    "Alder",
    "Quill",
)

# Generative model: taste weights (logit units), popularity exponent, per-brand spread (log scale).
_TASTE_WEIGHTS = {"category": 2.5, "colour": 1.5, "pattern": 1.2, "material": 1.0, "style": 1.0}
_POPULARITY_EXPONENT = 0.6
_BRAND_SPREAD = 0.5
_MIN_INTERACTIONS = 5
_COUNT_SIGMA = 0.8

_TITLES = (
    "{Brand} {Style} {Material} {Category} - {Colour}",
    "{Brand} {Material} {Category} in {Colour}",
    "{Colour} {Material} {Category} by {Brand}",
    "{Style} {Colour} {Category} | {Brand}",
)
_DESCRIPTIONS = (
    "A {style} {category} made of {material}, finished in {colour}.",
    "Made from {material}, this {style} {category} comes in {colour}.",
    "This {colour} {category} pairs {material} with a {style} look.",
    "{Brand} offers a {style} {category} in {colour}, crafted from {material}.",
)
_USES: dict[str, tuple[str, str]] = {
    "bottle": ("Keeps drinks cold for hours.", "Leak-proof lid for days out."),
    "box": ("Handy storage for small things.", "Stacks neatly on a shelf."),
    "ball": ("Great for the park or the beach.", "Bounces well on any surface."),
    "shirt": ("A relaxed fit for every day.", "Soft and easy to wash."),
    "mug": ("Holds a generous serving of coffee.", "Safe for the dishwasher."),
    "bag": ("Roomy enough for a laptop.", "Sturdy handles for daily errands."),
    "hat": ("Keeps the sun off your face.", "One size fits most."),
    "lamp": ("Casts a soft light over a desk.", "Fits any bedside table."),
}


@dataclass(frozen=True)
class DemoConfig:
    """Parameters of the demo dataset; equal configs give byte-identical datasets.

    Attributes:
        seed: seeds every random choice (attributes, tastes, draws, split, images, texts).
        n_users: number of users.
        n_items: number of items.
        image_size: side of the square item images, in pixels.
        new_item_share: share of items that are new: no train interaction, some valid/test ones.
        mean_interactions: average interactions per user (each user has at least 5).
        temperature: softmax temperature of the users' choices; lower is more predictable.
    """

    seed: int = 0
    n_users: int = 2000
    n_items: int = 1200
    image_size: int = 96
    new_item_share: float = 0.1
    mean_interactions: float = 12.0
    temperature: float = 0.5

    def __post_init__(self) -> None:
        checks = (
            (self.n_users >= 1, "n_users must be at least 1"),
            (self.n_items >= 30, "n_items must be at least 30"),
            (self.image_size >= 16, "image_size must be at least 16"),
            (0.0 <= self.new_item_share <= 0.5, "new_item_share must lie in [0, 0.5]"),
            (
                self.mean_interactions > _MIN_INTERACTIONS,
                f"mean_interactions must exceed {_MIN_INTERACTIONS}",
            ),
            (self.temperature > 0, "temperature must be positive"),
        )
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"DemoConfig: {message} (got {self})")


@dataclass(frozen=True)
class _Items:
    """Hidden item attributes, each ``[n_items]``: codes into the tables above, and popularity."""

    category: np.ndarray
    colour: np.ndarray
    pattern: np.ndarray
    material: np.ndarray
    style: np.ndarray
    brand: np.ndarray
    log_popularity: np.ndarray

    def frame(self, new: np.ndarray) -> pd.DataFrame:
        """Attribute names per item (row ``i`` = item ``i``) plus the ``[n_items]`` ``new`` flag."""
        return pd.DataFrame(
            {
                "category": np.array(_CATEGORIES)[self.category],
                "colour": np.array(list(_COLOURS))[self.colour],
                "pattern": np.array(_PATTERNS)[self.pattern],
                "material": np.array(_MATERIALS)[self.material],
                "style": np.array(_STYLES)[self.style],
                "brand": np.array(_BRANDS)[self.brand],
                "new": new,
            }
        )


@dataclass(frozen=True)
class _Tastes:
    """Hidden user tastes: ``[n_users, n_options]`` bool likes, or ``[n_users]`` liked code."""

    categories: np.ndarray
    colours: np.ndarray
    pattern: np.ndarray
    materials: np.ndarray
    style: np.ndarray

    def frame(self) -> pd.DataFrame:
        """Liked values per user (row ``u`` = user ``u``): lists of names, or one name."""

        def names(likes: np.ndarray, table: tuple[str, ...]) -> list[list[str]]:
            return [[table[j] for j in np.flatnonzero(row)] for row in likes]

        return pd.DataFrame(
            {
                "categories": names(self.categories, _CATEGORIES),
                "colours": names(self.colours, tuple(_COLOURS)),
                "pattern": np.array(_PATTERNS)[self.pattern],
                "materials": names(self.materials, _MATERIALS),
                "style": np.array(_STYLES)[self.style],
            }
        )


def _sample_items(rng: np.random.Generator, n_items: int) -> _Items:
    """Uniform attributes (materials drawn among the category's), power-law x brand popularity."""
    category = rng.integers(len(_CATEGORIES), size=n_items)
    options = [[_MATERIALS.index(m) for m in _MATERIALS_BY_CATEGORY[c]] for c in _CATEGORIES]
    n_options = np.array([len(o) for o in options])
    table = np.array([o + [o[0]] * (n_options.max() - len(o)) for o in options])
    pick = (rng.random(n_items) * n_options[category]).astype(np.int64)
    brand = rng.integers(len(_BRANDS), size=n_items)
    rank = rng.permutation(n_items) + 1
    brand_effect = rng.normal(0.0, _BRAND_SPREAD, size=len(_BRANDS))
    log_popularity = -_POPULARITY_EXPONENT * np.log(rank) + brand_effect[brand]
    return _Items(
        category=category,
        colour=rng.integers(len(_COLOURS), size=n_items),
        pattern=rng.integers(len(_PATTERNS), size=n_items),
        material=table[category, pick],
        style=rng.integers(len(_STYLES), size=n_items),
        brand=brand,
        log_popularity=log_popularity - log_popularity.mean(),
    )


def _random_subsets(
    rng: np.random.Generator, n_users: int, n_options: int, low: int, high: int
) -> np.ndarray:
    """``[n_users, n_options]`` bool: per user a uniform subset of ``low..high`` options."""
    sizes = rng.integers(low, high + 1, size=n_users)
    ranks = np.argsort(np.argsort(rng.random((n_users, n_options)), axis=1), axis=1)
    return ranks < sizes[:, None]


def _sample_tastes(rng: np.random.Generator, n_users: int) -> _Tastes:
    return _Tastes(
        categories=_random_subsets(rng, n_users, len(_CATEGORIES), 1, 2),
        colours=_random_subsets(rng, n_users, len(_COLOURS), 1, 3),
        pattern=rng.integers(len(_PATTERNS), size=n_users),
        materials=_random_subsets(rng, n_users, len(_MATERIALS), 1, 2),
        style=rng.integers(len(_STYLES), size=n_users),
    )


def _logits(items: _Items, tastes: _Tastes, temperature: float) -> np.ndarray:
    """``[n_users, n_items]`` choice logits: (weighted taste matches + log popularity) / T."""
    w = _TASTE_WEIGHTS
    score = w["category"] * tastes.categories[:, items.category].astype(np.float64)
    score += w["colour"] * tastes.colours[:, items.colour]
    score += w["pattern"] * (tastes.pattern[:, None] == items.pattern[None, :])
    score += w["material"] * tastes.materials[:, items.material]
    score += w["style"] * (tastes.style[:, None] == items.style[None, :])
    score += items.log_popularity[None, :]
    return score / temperature


def _interaction_counts(
    rng: np.random.Generator, n_users: int, mean: float, cap: int
) -> np.ndarray:
    """``[n_users]`` counts ``5 + floor(lognormal)`` with about the given mean, at most ``cap``."""
    median = (mean - _MIN_INTERACTIONS + 0.5) / np.exp(_COUNT_SIGMA**2 / 2)
    extra = np.floor(rng.lognormal(np.log(median), _COUNT_SIGMA, size=n_users)).astype(np.int64)
    return np.minimum(_MIN_INTERACTIONS + extra, cap)


def _gumbel_top_k(
    rng: np.random.Generator, logits: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``counts[u]`` items without replacement from ``softmax(logits[u])`` for every user.

    Returns:
        ``users`` and ``items``, ``[N]`` int64 (grouped by user, best draw first), and the
        ``[n_users, n_items]`` Gumbel-perturbed logits the draws are the top-k of.
    """
    perturbed = logits + rng.gumbel(size=logits.shape)
    k = int(counts.max())
    top = np.argpartition(-perturbed, k - 1, axis=1)[:, :k]
    top = np.take_along_axis(top, np.argsort(-np.take_along_axis(perturbed, top, 1), 1), 1)
    keep = np.arange(k)[None, :] < counts[:, None]
    return np.repeat(np.arange(len(counts)), counts), top[keep], perturbed


def _choose_new_items(
    rng: np.random.Generator, items: np.ndarray, n_items: int, share: float
) -> np.ndarray:
    """``[n_items]`` bool: ``round(share * n_items)`` new items, uniform among interacted items."""
    interacted = np.flatnonzero(np.bincount(items, minlength=n_items) > 0)
    n_new = min(round(share * n_items), len(interacted))
    new = np.zeros(n_items, dtype=bool)
    new[rng.choice(interacted, size=n_new, replace=False)] = True
    return new


def _ensure_old_item(
    users: np.ndarray, items: np.ndarray, new: np.ndarray, perturbed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Give every user who drew only new items its best-scoring old item, as one more draw."""
    has_old = np.zeros(perturbed.shape[0], dtype=bool)
    has_old[users[~new[items]]] = True
    lacking = np.flatnonzero(~has_old)
    best_old = np.where(new[None, :], -np.inf, perturbed[lacking]).argmax(axis=1)
    return np.concatenate([users, lacking]), np.concatenate([items, best_old])


def _rank_keys(users: np.ndarray, width: int) -> np.ndarray:
    """``[n]`` keys ``user * width + r`` where ``r`` counts earlier rows of the same user."""
    order = np.argsort(users, kind="stable")
    sorted_users = users[order]
    rank = np.empty(len(users), dtype=np.int64)
    rank[order] = np.arange(len(users)) - np.searchsorted(sorted_users, sorted_users)
    return users * width + rank


def _hold_out_new_items(
    rng: np.random.Generator,
    users: np.ndarray,
    items: np.ndarray,
    labels: np.ndarray,
    new: np.ndarray,
) -> np.ndarray:
    """Relabel ``[N]`` split labels so that no train interaction involves a new item.

    Each train interaction with a new item swaps labels with a random held-out interaction of the
    same user with an old item, keeping the user's split sizes; those left without a partner
    become valid or test at random.
    """
    labels = labels.copy()
    is_new = new[items]
    moved = np.flatnonzero(is_new & (labels == TRAIN))
    partners = rng.permutation(np.flatnonzero(~is_new & (labels != TRAIN)))
    width = len(users)
    _, i_moved, i_partner = np.intersect1d(
        _rank_keys(users[moved], width),
        _rank_keys(users[partners], width),
        assume_unique=True,
        return_indices=True,
    )
    labels[moved[i_moved]] = labels[partners[i_partner]]
    labels[partners[i_partner]] = TRAIN
    unpaired = np.delete(moved, i_moved)
    labels[unpaired] = rng.choice(np.array([VALID, TEST], dtype=np.int8), size=len(unpaired))
    return labels


def _texts(rng: np.random.Generator, items: _Items) -> list[str]:
    """One text per item: a title, a description and a usage sentence from varied templates."""
    colours = list(_COLOURS)
    choice = rng.integers(0, [len(_TITLES), len(_DESCRIPTIONS), 2], size=(len(items.category), 3))
    texts = []
    for i, (t, d, u) in enumerate(choice):
        words = {
            "brand": _BRANDS[items.brand[i]],
            "style": _STYLES[items.style[i]],
            "material": _MATERIALS[items.material[i]],
            "category": _CATEGORIES[items.category[i]],
            "colour": colours[items.colour[i]],
        }
        use = _USES[words["category"]][u]
        words |= {k.capitalize(): v[0].upper() + v[1:] for k, v in words.items()}
        texts.append(f"{_TITLES[t].format(**words)}. {_DESCRIPTIONS[d].format(**words)} {use}")
    return texts


class _Part(NamedTuple):
    """A polygon of a silhouette in unit coordinates ``[n, 2]`` (y down), with its shading.

    ``shade`` scales the colour (255 = full); a ``hole`` cuts the polygon out of the silhouette.
    """

    points: np.ndarray
    shade: int
    hole: bool = False
    outline: bool = True


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], dtype=np.float64)


def _poly(*points: tuple[float, float]) -> np.ndarray:
    return np.array(points, dtype=np.float64)


def _ellipse(
    cx: float, cy: float, rx: float, ry: float, start: float = 0.0, end: float = 360.0
) -> np.ndarray:
    """``[48, 2]`` points of an elliptic arc (degrees, clockwise on screen)."""
    t = np.radians(np.linspace(start, end, 48))
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


_SHAPES: dict[str, tuple[_Part, ...]] = {
    "bottle": (
        _Part(_rect(0.40, 0.03, 0.60, 0.13), 150),
        _Part(_rect(0.43, 0.13, 0.57, 0.30), 235),
        _Part(_poly((0.43, 0.29), (0.57, 0.29), (0.72, 0.43), (0.28, 0.43)), 245),
        _Part(_rect(0.28, 0.42, 0.72, 0.97), 255),
    ),
    "box": (
        _Part(_poly((0.10, 0.34), (0.64, 0.34), (0.90, 0.14), (0.36, 0.14)), 255),
        _Part(_poly((0.64, 0.34), (0.90, 0.14), (0.90, 0.72), (0.64, 0.94)), 170),
        _Part(_rect(0.10, 0.34, 0.64, 0.94), 215),
    ),
    "ball": (
        _Part(_ellipse(0.50, 0.50, 0.44, 0.44), 190),
        _Part(_ellipse(0.46, 0.46, 0.34, 0.34), 220, outline=False),
        _Part(_ellipse(0.42, 0.42, 0.22, 0.22), 245, outline=False),
        _Part(_ellipse(0.38, 0.38, 0.10, 0.10), 255, outline=False),
    ),
    "shirt": (
        _Part(
            _poly(
                (0.04, 0.30),
                (0.30, 0.10),
                (0.40, 0.10),
                (0.50, 0.19),
                (0.60, 0.10),
                (0.70, 0.10),
                (0.96, 0.30),
                (0.84, 0.46),
                (0.75, 0.39),
                (0.75, 0.95),
                (0.25, 0.95),
                (0.25, 0.39),
                (0.16, 0.46),
            ),
            255,
        ),
    ),
    "mug": (
        _Part(_ellipse(0.74, 0.56, 0.20, 0.22), 215),
        _Part(_ellipse(0.74, 0.56, 0.11, 0.13), 0, hole=True),
        _Part(_rect(0.16, 0.24, 0.74, 0.92), 255),
        _Part(_ellipse(0.45, 0.24, 0.29, 0.06), 180),
    ),
    "bag": (
        _Part(_ellipse(0.50, 0.38, 0.24, 0.26), 200),
        _Part(_ellipse(0.50, 0.38, 0.17, 0.19), 0, hole=True),
        _Part(_poly((0.16, 0.40), (0.84, 0.40), (0.94, 0.95), (0.06, 0.95)), 255),
    ),
    "hat": (
        _Part(_ellipse(0.50, 0.74, 0.47, 0.11), 200),
        _Part(_ellipse(0.50, 0.74, 0.30, 0.48, 180.0, 360.0), 255),
        _Part(_rect(0.21, 0.62, 0.79, 0.70), 140),
    ),
    "lamp": (
        _Part(_ellipse(0.50, 0.92, 0.24, 0.06), 170),
        _Part(_rect(0.46, 0.44, 0.54, 0.91), 160),
        _Part(_poly((0.30, 0.06), (0.70, 0.06), (0.86, 0.46), (0.14, 0.46)), 255),
    ),
}
_OUTLINE_SHADE = 90


class _Pose(NamedTuple):
    """Where one silhouette lies on a canvas of ``side`` pixels and how its pattern is laid."""

    side: int
    centre: np.ndarray  # [2] pixels
    scale: float  # pixels per unit
    angle: float  # radians
    period: float  # pattern period, pixels
    phase: np.ndarray  # [2] pixels


def _place(points: np.ndarray, pose: _Pose) -> list[float]:
    """Unit ``[n, 2]`` points -> flat pixel coordinates, scaled, rotated and moved."""
    cos, sin = np.cos(pose.angle), np.sin(pose.angle)
    centred = (points - 0.5) * pose.scale
    x = cos * centred[:, 0] - sin * centred[:, 1] + pose.centre[0]
    y = sin * centred[:, 0] + cos * centred[:, 1] + pose.centre[1]
    return np.stack([x, y], axis=1).ravel().tolist()


def _silhouette(category: str, pose: _Pose) -> tuple[Image.Image, Image.Image]:
    """Object mask (``L``, 255 inside) and shading (``L``, 255 = full colour) of a silhouette."""
    size = (pose.side, pose.side)
    mask, shade = Image.new("L", size, 0), Image.new("L", size, 255)
    draw_mask, draw_shade = ImageDraw.Draw(mask), ImageDraw.Draw(shade)
    width = max(2, pose.side // 64)
    for part in _SHAPES[category]:
        xy = _place(part.points, pose)
        edge = 255 if part.outline else None
        draw_mask.polygon(xy, fill=0 if part.hole else 255, outline=edge, width=width)
        draw_shade.polygon(
            xy,
            fill=None if part.hole else part.shade,
            outline=_OUTLINE_SHADE if part.outline else None,
            width=width,
        )
    return mask, shade


def _pattern(pattern: str, pose: _Pose) -> Image.Image:
    """Where the accent colour goes (``L``, 255), laid out in the object's rotated frame."""
    grid = np.arange(pose.side, dtype=np.float32) + 0.5
    x, y = grid[None, :] - pose.centre[0], grid[:, None] - pose.centre[1]
    cos, sin = np.float32(np.cos(pose.angle)), np.float32(np.sin(pose.angle))
    period = np.float32(pose.period)
    u = (cos * x + sin * y + np.float32(pose.phase[0])) / period  # [side, side] in periods
    v = (cos * y - sin * x + np.float32(pose.phase[1])) / period
    if pattern == "stripes":
        where = v - np.floor(v) < 0.5
    elif pattern == "dots":
        du, dv = u - np.floor(u) - np.float32(0.5), v - np.floor(v) - np.float32(0.5)
        where = du * du + dv * dv < np.float32(0.28**2)
    elif pattern == "checks":
        where = (np.floor(2 * u) + np.floor(2 * v)).astype(np.int32) % 2 == 0
    else:
        where = np.zeros((pose.side, pose.side), dtype=bool)
    return Image.fromarray(where.astype(np.uint8) * 255, "L")


def _accent(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """The pattern colour for main colour ``rgb``: darker if it is light, lighter if dark."""
    r, g, b = rgb
    if 0.299 * r + 0.587 * g + 0.114 * b >= 100:
        return (r // 2, g // 2, b // 2)
    return (r + (255 - r) * 7 // 10, g + (255 - g) * 7 // 10, b + (255 - b) * 7 // 10)


def _render(
    category: str,
    pattern: str,
    rgb: tuple[int, int, int],
    background: tuple[int, int, int],
    pose: _Pose,
) -> Image.Image:
    """One item image, ``pose.side // 2`` pixels square (drawn at ``side``, then halved)."""
    size = (pose.side, pose.side)
    mask, shade = _silhouette(category, pose)
    fill = Image.new("RGB", size, rgb)
    fill.paste(_accent(rgb), mask=_pattern(pattern, pose))
    shaded = ImageChops.multiply(fill, shade.convert("RGB"))
    return Image.composite(shaded, Image.new("RGB", size, background), mask).reduce(2)


def _render_images(rng: np.random.Generator, items: _Items, root: Path, size: int) -> list[str]:
    """Write ``root/images/<index>.png`` for every item; returns the paths relative to ``root``."""
    n = len(items.category)
    side = 2 * size
    scale = rng.uniform(0.70, 0.90, size=n)
    angle = np.radians(rng.uniform(-12.0, 12.0, size=n))
    centre = side * (0.5 + 0.4 * (1 - scale)[:, None] * rng.uniform(-1, 1, size=(n, 2)))
    period = side * scale / rng.uniform(5.5, 7.5, size=n)
    phase = rng.uniform(0, 1, size=(n, 2)) * period[:, None]
    background = rng.integers(228, 251, size=(n, 3)).tolist()
    palette = np.array(list(_COLOURS.values()))
    rgb = np.clip(palette[items.colour] + rng.integers(-14, 15, size=(n, 3)), 0, 255).tolist()
    (root / "images").mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        pose = _Pose(side, centre[i], side * scale[i], angle[i], period[i], phase[i])
        image = _render(
            _CATEGORIES[items.category[i]],
            _PATTERNS[items.pattern[i]],
            tuple(rgb[i]),
            tuple(background[i]),
            pose,
        )
        path = f"images/{i:06d}.png"
        image.save(root / path, format="PNG", compress_level=3)
        paths.append(path)
    return paths


def build_demo(root: Path, config: DemoConfig = DemoConfig()) -> Dataset:
    """Generate the demo dataset into folder ``root`` and return it.

    Writes ``root/images/*.png``, ``root/attributes.parquet`` and ``root/tastes.parquet``, then
    saves the dataset there with :meth:`Dataset.save` (``dataset.json`` last, so a folder without
    it is incomplete). Build into an empty folder, or one built before from the same config.

    Args:
        root: the dataset folder; created if missing.
        config: sizes, seed and knobs of the generator.

    Returns:
        The dataset (name ``"demo"``, raw ids ``u00000``/``i00000``, a catalog rooted at ``root``,
        the config and a description in ``info``).
    """
    root = Path(root)
    item_rng, user_rng, new_rng, text_rng, image_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(5)
    )
    items = _sample_items(item_rng, config.n_items)
    tastes = _sample_tastes(user_rng, config.n_users)
    logits = _logits(items, tastes, config.temperature)
    counts = _interaction_counts(
        user_rng, config.n_users, config.mean_interactions, cap=config.n_items // 3
    )
    users, chosen, perturbed = _gumbel_top_k(user_rng, logits, counts)
    new = _choose_new_items(new_rng, chosen, config.n_items, config.new_item_share)
    users, chosen = _ensure_old_item(users, chosen, new, perturbed)
    labels = random_split(users, seed=config.seed)
    labels = _hold_out_new_items(new_rng, users, chosen, labels, new)

    catalog = ItemCatalog(
        texts=_texts(text_rng, items),
        images=_render_images(image_rng, items, root, config.image_size),
        root=root,
    )
    items.frame(new).to_parquet(root / "attributes.parquet", index=False)
    tastes.frame().to_parquet(root / "tastes.parquet", index=False)
    dataset = Dataset.from_interactions(
        users,
        chosen,
        labels,
        name="demo",
        where=f"demo dataset {root}",
        n_users=config.n_users,
        n_items=config.n_items,
        user_ids=np.array([f"u{u:05d}" for u in range(config.n_users)]),
        item_ids=np.array([f"i{i:05d}" for i in range(config.n_items)]),
        catalog=catalog,
        root=root,
        info=_info(config, int(new.sum())),
    )
    dataset.save(root)
    return dataset


def _info(config: DemoConfig, n_new: int) -> dict[str, Any]:
    return {
        "generator": "lmmrec.data.demo",
        "generator_version": _VERSION,
        "config": asdict(config),
        "description": (
            "Synthetic shop of drawn products (bottle, box, ball, shirt, mug, bag, hat, lamp). "
            "Category and colour show in image and text, the pattern only in the image, material, "
            "style and brand only in the text; users choose by hidden tastes over these and by "
            f"popularity. {n_new} new items have valid/test but no train interactions. The hidden "
            "truth is in attributes.parquet (items) and tastes.parquet (users)."
        ),
        "new_items": n_new,
    }


def demo_dir(config: DemoConfig = DemoConfig()) -> Path:
    """Cache folder of the demo built from ``config``.

    ``$LMMREC_HOME/datasets/demo-v<version>-<config hash>``; ``LMMREC_HOME`` defaults to
    ``platformdirs.user_data_dir("lmmrec")``.
    """
    digest = hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode()).hexdigest()
    return lmmrec_home() / "datasets" / f"demo-v{_VERSION}-{digest[:12]}"


def load_demo(config: DemoConfig = DemoConfig(), *, rebuild: bool = False) -> Dataset:
    """The demo dataset of ``config``, read from its cache folder, built there first if needed.

    A folder without ``dataset.json`` is incomplete and rebuilt. Building happens in a temporary
    folder renamed into place, so concurrent or interrupted builds never leave a half dataset.

    Args:
        config: the generator's parameters (they key the cache, see :func:`demo_dir`).
        rebuild: build again even when a complete cached copy exists.
    """
    root = demo_dir(config)
    if rebuild or not (root / "dataset.json").is_file():
        logger.info("building the demo dataset in %s", root)
        with atomic_path(root) as tmp:
            build_demo(tmp, config)
    return Dataset.load(root)
