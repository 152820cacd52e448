"""The built-in demo dataset: sizes, determinism, cold-start items, caching, and real signal."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lmmrec.data import Dataset
from lmmrec.data import demo as demo_module
from lmmrec.data.demo import DemoConfig, build_demo, demo_dir, load_demo
from lmmrec.errors import ConfigError

SMALL = DemoConfig(n_users=200, n_items=120, image_size=32)
TINY = DemoConfig(n_users=60, n_items=40, image_size=16)


def _build(root: Path, config: DemoConfig) -> Dataset:
    """Build, failing if ``Dataset.from_interactions`` warns that it dropped interactions."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*dropped")
        return build_demo(root, config)


def _image_bytes(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "images").iterdir())}


@dataclass(frozen=True)
class Built:
    """A built demo: its folder, the dataset and the hidden truth (items' attributes, tastes)."""

    root: Path
    dataset: Dataset
    attributes: pd.DataFrame
    tastes: pd.DataFrame


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("small") / "demo"
    dataset = _build(root, SMALL)
    return Built(
        root,
        dataset,
        pd.read_parquet(root / "attributes.parquet"),
        pd.read_parquet(root / "tastes.parquet"),
    )


def test_sizes_ids_and_images(small: Built) -> None:
    root, dataset, attributes = small.root, small.dataset, small.attributes
    assert (dataset.name, dataset.n_users, dataset.n_items) == ("demo", 200, 120)
    assert dataset.user_ids[0] == "u00000" and dataset.item_ids[-1] == "i00119"
    assert len(dataset.catalog) == 120 and len(attributes) == 120
    assert dataset.catalog.root == root and dataset.root == root
    for item in range(dataset.n_items):
        path = dataset.catalog.image_path(item)
        assert path is not None and path.is_file()
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("PNG", "RGB", (32, 32))
    assert len(set(_image_bytes(root).values())) == 120, "two items share an identical image"
    assert dataset.info["config"]["n_items"] == 120 and dataset.info["description"]


def test_saved_folder_loads_back(small: Built) -> None:
    root, dataset = small.root, small.dataset
    loaded = Dataset.load(root)
    pd.testing.assert_frame_equal(loaded.interaction_frame(), dataset.interaction_frame())
    assert loaded.catalog.texts == dataset.catalog.texts
    assert loaded.catalog.load_image(0) is not None


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path, small: Built) -> None:
    root, dataset = small.root, small.dataset
    again = _build(tmp_path / "again", SMALL)
    pd.testing.assert_frame_equal(again.interaction_frame(), dataset.interaction_frame())
    assert again.catalog.texts == dataset.catalog.texts
    assert _image_bytes(tmp_path / "again") == _image_bytes(root)

    other = _build(tmp_path / "other", DemoConfig(seed=1, n_users=200, n_items=120, image_size=32))
    assert not other.interaction_frame().equals(dataset.interaction_frame())
    assert other.catalog.texts != dataset.catalog.texts
    assert _image_bytes(tmp_path / "other") != _image_bytes(root)


def test_every_user_has_train_valid_and_test(small: Built) -> None:
    dataset = small.dataset
    for split in ("train", "valid", "test"):
        assert np.diff(dataset.split(split).indptr).min() >= 1, f"a user has no {split} item"
    per_user = np.diff((dataset.train + dataset.valid + dataset.test).indptr)
    assert per_user.min() >= 5 and 8 <= per_user.mean() <= 16


def test_new_items_are_cold_but_held_out(small: Built) -> None:
    dataset, attributes = small.dataset, small.attributes
    new = attributes["new"].to_numpy()
    assert new.sum() == round(SMALL.new_item_share * SMALL.n_items)
    train_degree = np.asarray(dataset.train.sum(axis=0)).ravel()
    held_out_degree = np.asarray((dataset.valid + dataset.test).sum(axis=0)).ravel()
    assert (train_degree[new] == 0).all()
    assert (held_out_degree[new] >= 1).all()
    assert dataset.info["new_items"] == new.sum()
    assert dataset.statistics()["items_unseen_in_train"] >= new.sum()


@pytest.mark.parametrize("share", [0.0, 0.3])
def test_new_item_share_follows_config(tmp_path: Path, share: float) -> None:
    config = DemoConfig(n_users=60, n_items=40, image_size=16, new_item_share=share)
    dataset = _build(tmp_path / "demo", config)
    new = pd.read_parquet(tmp_path / "demo" / "attributes.parquet")["new"].to_numpy()
    assert new.mean() == pytest.approx(share, abs=0.02)
    train_degree = np.asarray(dataset.train.sum(axis=0)).ravel()
    assert (train_degree[new] == 0).all()
    assert np.diff(dataset.train.indptr).min() >= 1


def test_texts_name_category_colour_but_not_pattern(small: Built) -> None:
    dataset, attributes = small.dataset, small.attributes
    for text, row in zip(dataset.catalog.texts, attributes.itertuples(), strict=True):
        words = set(re.findall(r"[a-z]+", text.lower()))
        assert {row.category, row.colour, row.material, row.style} <= words, text
        assert row.brand in text
        assert not words & {"plain", "stripes", "striped", "dots", "dotted", "checks", "checked"}
    assert len(set(dataset.catalog.texts)) > 0.9 * dataset.n_items


def test_images_show_colour_and_pattern(small: Built) -> None:
    """The median object pixel gives the colour of plain items; patterns break up the colour."""
    dataset, attributes = small.dataset, small.attributes
    medians, near_median = [], []
    for item in range(dataset.n_items):
        pixels = np.asarray(dataset.catalog.load_image(item), dtype=np.float64).reshape(-1, 3)
        obj = pixels[np.abs(pixels - pixels[0]).sum(axis=1) > 60]  # pixel 0 is background
        medians.append(np.median(obj, axis=0))
        near_median.append((np.abs(obj - medians[-1]).sum(axis=1) < 60).mean())
    medians, near_median = np.array(medians), np.array(near_median)
    colours = attributes["colour"].to_numpy()
    plain = attributes["pattern"].to_numpy() == "plain"
    names = np.unique(colours[plain])
    centroids = np.array([medians[plain & (colours == c)].mean(axis=0) for c in names])
    distances = ((medians[plain, None] - centroids[None]) ** 2).sum(axis=-1)
    assert (names[distances.argmin(axis=1)] == colours[plain]).mean() > 0.9
    assert np.median(near_median[plain]) > np.median(near_median[~plain]) + 0.15


@pytest.mark.parametrize(
    ("attribute", "liked"),
    [
        ("category", "categories"),
        ("colour", "colours"),
        ("pattern", "pattern"),
        ("material", "materials"),
        ("style", "style"),
    ],
)
def test_users_choose_by_their_tastes(small: Built, attribute: str, liked: str) -> None:
    """Interactions hit the user's liked values far above chance (same items, users shuffled)."""
    frame = small.dataset.interaction_frame()
    values = small.attributes[attribute].to_numpy()[frame["item"].to_numpy()]
    likes = small.tastes[liked].to_numpy()

    def hit_rate(users: np.ndarray) -> float:
        hits = [v in np.atleast_1d(likes[u]) for u, v in zip(users, values, strict=True)]
        return float(np.mean(hits))

    users = frame["user"].to_numpy()
    real, chance = hit_rate(users), hit_rate(np.random.default_rng(0).permutation(users))
    assert real > 1.5 * chance, (attribute, real, chance)


def test_users_items_share_categories(small: Built) -> None:
    """Observable without the truth: two items of one user share their category far above chance."""
    frame = small.dataset.interaction_frame()
    categories = small.attributes["category"].to_numpy()[frame["item"].to_numpy()]
    users = frame["user"].to_numpy()

    def same_category_rate(users: np.ndarray) -> float:
        counts = pd.DataFrame({"user": users, "category": categories}).value_counts()
        per_user = counts.groupby(level="user")
        pairs = per_user.sum() * (per_user.sum() - 1)
        return float(((counts * (counts - 1)).groupby(level="user").sum() / pairs).mean())

    real = same_category_rate(users)
    chance = same_category_rate(np.random.default_rng(0).permutation(users))
    assert real > 1.5 * chance, (real, chance)


def test_load_demo_builds_once_then_reads_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LMMREC_HOME", str(tmp_path))
    folder = demo_dir(TINY)
    assert folder.parent == tmp_path / "datasets" and folder.name.startswith("demo-v")
    assert demo_dir(TINY) == folder != demo_dir(DemoConfig(seed=5, n_users=60, n_items=40))
    builds: list[Path] = []

    def counting_build(root: Path, config: DemoConfig) -> Dataset:
        builds.append(root)
        return build_demo(root, config)

    monkeypatch.setattr(demo_module, "build_demo", counting_build)
    first = load_demo(TINY)
    assert len(builds) == 1 and (folder / "dataset.json").is_file()
    assert first.root == folder and first.catalog.image_path(0).is_file()

    second = load_demo(TINY)
    assert len(builds) == 1, "load_demo rebuilt a complete cached dataset"
    pd.testing.assert_frame_equal(second.interaction_frame(), first.interaction_frame())
    assert [p.name for p in (tmp_path / "datasets").iterdir()] == [folder.name]

    (folder / "dataset.json").unlink()  # an incomplete folder is built again
    rebuilt = load_demo(TINY)
    assert len(builds) == 2
    pd.testing.assert_frame_equal(rebuilt.interaction_frame(), first.interaction_frame())
    load_demo(TINY, rebuild=True)
    assert len(builds) == 3


def test_bad_config_is_refused() -> None:
    with pytest.raises(ConfigError, match="new_item_share"):
        DemoConfig(new_item_share=0.9)
    with pytest.raises(ConfigError, match="mean_interactions"):
        DemoConfig(mean_interactions=4.0)
