"""The Dataset: CSR construction, cold-user dropping, validation, save/load, statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lmmrec.data.catalog import ItemCatalog
from lmmrec.data.dataset import Dataset
from lmmrec.data.features import FeatureSet
from lmmrec.errors import DataError, FeatureError

# 3 users x 4 items; user 0: train 0 1, valid 2, test 3; user 1: train 1 2, valid 0, test 3;
# user 2: train 0, valid 1, test 2
USERS = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
ITEMS = np.array([0, 1, 2, 3, 1, 2, 0, 3, 0, 1, 2])
LABELS = np.array([0, 0, 1, 2, 0, 0, 1, 2, 0, 1, 2])


def _small(**kwargs: object) -> Dataset:
    return Dataset.from_interactions(USERS, ITEMS, LABELS, name="small", where="small", **kwargs)


def test_from_interactions_builds_the_split_matrices() -> None:
    dataset = _small()
    assert (dataset.n_users, dataset.n_items, dataset.n_interactions) == (3, 4, 11)
    np.testing.assert_array_equal(
        dataset.train.toarray(), [[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 0, 0]]
    )
    np.testing.assert_array_equal(
        dataset.valid.toarray(), [[0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 0]]
    )
    np.testing.assert_array_equal(
        dataset.test.toarray(), [[0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 1, 0]]
    )
    for matrix in (dataset.train, dataset.valid, dataset.test):
        assert matrix.has_sorted_indices and matrix.dtype == np.float32
    np.testing.assert_array_equal(dataset.user_ids, ["0", "1", "2"])
    assert dataset.split("valid") is dataset.valid


def test_duplicates_within_a_split_are_merged_to_one() -> None:
    dataset = Dataset.from_interactions(
        np.append(USERS, 0), np.append(ITEMS, 0), np.append(LABELS, 0), name="d", where="d"
    )
    assert dataset.train[0, 0] == 1.0
    assert dataset.n_interactions == 11


def test_held_out_interactions_of_users_without_training_are_dropped() -> None:
    # user 3 has only a valid and a test interaction
    users, items, labels = (
        np.append(a, b) for a, b in ((USERS, [3, 3]), (ITEMS, [0, 1]), (LABELS, [1, 2]))
    )
    with pytest.warns(UserWarning, match="dropped 2 valid/test interactions of 1 users"):
        dataset = Dataset.from_interactions(users, items, labels, name="c", where="c")
    assert dataset.n_users == 4
    assert dataset.valid[3].nnz == dataset.test[3].nnz == 0


def test_empty_split_is_an_error() -> None:
    labels = np.where(LABELS == 2, 1, LABELS)
    with pytest.raises(DataError, match="small: the test split is empty"):
        Dataset.from_interactions(USERS, ITEMS, labels, name="small", where="small")
    with pytest.raises(DataError, match="no interactions"):
        Dataset.from_interactions([], [], [], name="e", where="e")


def test_out_of_range_and_malformed_inputs_are_errors() -> None:
    with pytest.raises(DataError, match=r"small: item indices must lie in 0\.\.2, found 0\.\.3"):
        _small(n_items=3)
    with pytest.raises(DataError, match=r"user indices must lie in 0\.\.2, found -1\.\.2"):
        Dataset.from_interactions(
            np.append(USERS, -1),
            np.append(ITEMS, 0),
            np.append(LABELS, 0),
            name="n",
            where="n",
            n_users=3,
        )
    with pytest.raises(DataError, match="split labels must be 0"):
        Dataset.from_interactions(
            USERS, ITEMS, np.where(LABELS == 2, 258, LABELS), name="l", where="l"
        )
    with pytest.raises(DataError, match="user values must be whole numbers"):
        Dataset.from_interactions(USERS + 0.5, ITEMS, LABELS, name="f", where="f")
    with pytest.raises(DataError, match="got 11 users, 10 items"):
        Dataset.from_interactions(USERS, ITEMS[:-1], LABELS, name="s", where="s")
    with pytest.raises(DataError, match="id maps have 2 users"):
        _small(user_ids=np.array(["a", "b"]))
    with pytest.raises(DataError, match="item catalog has 2 rows, expected 4"):
        _small(catalog=ItemCatalog(texts=["a", "b"], images=[None, None]))


def test_statistics() -> None:
    stats = _small().statistics()
    assert stats == {
        "name": "small",
        "users": 3,
        "items": 4,
        "interactions": 11,
        "sparsity": pytest.approx(1 - 11 / 12),
        "train": 5,
        "valid": 3,
        "test": 3,
        "valid_users": 3,
        "test_users": 3,
        "items_unseen_in_train": 1,
        "feature_sets": {},
        "has_catalog": False,
    }


def _features(n_items: int = 4) -> FeatureSet:
    rng = np.random.default_rng(0)
    return FeatureSet(
        name="clip",
        arrays={
            "image": rng.normal(size=(n_items, 3)).astype(np.float32),
            "text": rng.normal(size=(n_items, 2)).astype(np.float32),
        },
        manifest={"encoder": "clip"},
    )


def test_feature_set_validation() -> None:
    dataset = _small()
    with pytest.raises(FeatureError, match=r"image features have shape \(5, 3\).*4 items"):
        dataset.add_feature_set(_features(5))
    bad = _features()
    bad.arrays["text"][2, 1] = np.nan
    with pytest.raises(FeatureError, match=r"text features have NaN/inf in 1 rows \(first items"):
        dataset.add_feature_set(bad)
    with pytest.raises(FeatureError, match="has no feature set 'clip' \\(it has: none\\)"):
        dataset.feature_set("clip")
    dataset.add_feature_set(_features())
    assert dataset.statistics()["feature_sets"] == {"clip": {"image": 3, "text": 2}}


def test_save_load_round_trip(tmp_path: Path) -> None:
    catalog = ItemCatalog(
        texts=["red mug", "", "blue hat", "box"],
        images=["img/0.png", None, "/abs/2.png", "img/3.png"],
        root=tmp_path,
    )
    dataset = _small(
        user_ids=np.array(["ann", "bob", "cy"]),
        item_ids=np.array(["B0", "B1", "B2", "B3"]),
        catalog=catalog,
        info={"source": "hand"},
    )
    dataset.add_feature_set(_features())
    dataset.save(tmp_path)
    loaded = Dataset.load(tmp_path)
    assert loaded.root == tmp_path
    assert (loaded.name, loaded.n_users, loaded.n_items, loaded.info) == (
        "small",
        3,
        4,
        {"source": "hand"},
    )
    for split in ("train", "valid", "test"):
        assert (loaded.split(split) != dataset.split(split)).nnz == 0
    np.testing.assert_array_equal(loaded.user_ids, dataset.user_ids)
    np.testing.assert_array_equal(loaded.item_ids, dataset.item_ids)
    assert loaded.catalog is not None
    assert loaded.catalog.texts == catalog.texts
    assert loaded.catalog.images == catalog.images
    assert loaded.catalog.image_path(0) == tmp_path / "img" / "0.png"
    features = loaded.feature_set("clip")
    assert features.manifest["encoder"] == "clip"
    for modality, array in dataset.features["clip"].arrays.items():
        np.testing.assert_array_equal(features.arrays[modality], array)
    assert loaded.content_hash() == dataset.content_hash()


def test_save_elsewhere_keeps_relative_images_resolvable(tmp_path: Path) -> None:
    images_root = tmp_path / "shop"
    catalog = ItemCatalog(
        texts=["a", "b", "c", "d"], images=["img/0.png", None, None, None], root=images_root
    )
    _small(catalog=catalog).save(tmp_path / "copy")
    loaded = Dataset.load(tmp_path / "copy")
    assert loaded.catalog is not None
    assert loaded.catalog.image_path(0) == images_root / "img" / "0.png"


def test_save_keeps_unrelated_files_and_feature_sets(tmp_path: Path) -> None:
    dataset = _small()
    dataset.save(tmp_path / "ds")
    (tmp_path / "ds" / "images").mkdir()
    (tmp_path / "ds" / "images" / "0.png").write_bytes(b"png")
    other = _features()
    other.name = "sbert"
    other.save(tmp_path / "ds" / "features" / "sbert")  # written beside, not added in memory
    dataset.add_feature_set(_features())
    dataset.save(tmp_path / "ds")
    loaded = Dataset.load(tmp_path / "ds")
    assert sorted(loaded.features) == ["clip", "sbert"]
    assert (tmp_path / "ds" / "images" / "0.png").read_bytes() == b"png"


def test_load_rejects_a_folder_that_is_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"dataset\.json is missing"):
        Dataset.load(tmp_path)
    (tmp_path / "dataset.json").write_text('{"format": "other"}')
    with pytest.raises(DataError, match="'format' must be 'lmmrec-dataset', found 'other'"):
        Dataset.load(tmp_path)
