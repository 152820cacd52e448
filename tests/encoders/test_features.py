"""Feature extraction: row alignment, missing-modality policies, manifest, reuse and resume."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lmmrec import encoders
from lmmrec.data.dataset import Dataset
from lmmrec.encoders import ItemBatch, extract_features, missing_mask
from lmmrec.encoders.features import ABSENT, PRESENT, UNREADABLE, apply_missing_policy
from lmmrec.errors import ConfigError, FeatureError

NO_IMAGE, BROKEN_IMAGE, NO_TEXT = (3, 11), (7,), (5, 11)  # see the dataset fixture


@pytest.fixture
def dataset(catalog_dataset: Dataset) -> Dataset:
    return catalog_dataset


@pytest.fixture
def clip(clip_folder: Path) -> encoders.ItemEncoder:
    return encoders.build(f"clip:{clip_folder}")


def _direct(encoder, dataset: Dataset) -> dict[str, torch.Tensor]:
    """Every item through the encoder in one batch, without the extraction machinery."""
    catalog = dataset.catalog
    images = [catalog.load_image(i) for i in range(len(catalog))]
    with torch.no_grad():
        return encoder(encoder.preprocess(ItemBatch(texts=catalog.texts, images=images)))


class Interrupted(Exception):
    """Stands for Ctrl-C or a crash in the middle of an extraction."""


def _counting(encoder, fail_after: int | None = None) -> list[int]:
    """Record the size of each batch the encoder sees; raise after ``fail_after`` batches."""
    calls: list[int] = []
    forward = encoder.forward

    def counted(inputs):
        if fail_after is not None and len(calls) == fail_after:
            raise Interrupted
        calls.append(len(next(iter(inputs.values()))))
        return forward(inputs)

    encoder.forward = counted
    return calls


def test_rows_are_items_and_missing_rows_are_zeros(dataset: Dataset, clip) -> None:
    features = extract_features(dataset, clip, name="clip", batch_size=8, num_workers=0)
    assert dataset.feature_set("clip") is features
    assert features.dims == {"image": 16, "text": 16}
    direct = _direct(clip, dataset)
    for modality, missing_items in (("image", NO_IMAGE + BROKEN_IMAGE), ("text", NO_TEXT)):
        array = features.arrays[modality]
        mask = missing_mask(features, modality, dataset.n_items)
        assert np.flatnonzero(mask).tolist() == sorted(missing_items)
        assert not array[mask].any()
        np.testing.assert_allclose(array[~mask], direct[modality][~mask].numpy(), atol=1e-5)
    report = features.manifest["missing"]
    assert report["policy"] == "zeros"
    assert report["modalities"]["image"] | {"items": None} == {
        "count": 3, "absent": 2, "unreadable": 1, "items": None, "action": "zeros",
    }  # fmt: skip
    assert report["modalities"]["text"]["absent"] == 2


def test_manifest_records_provenance(dataset: Dataset, clip) -> None:
    features = extract_features(
        dataset, clip, name="clip", modalities=["fused"], batch_size=16, num_workers=0
    )
    manifest = features.manifest
    assert manifest["encoder"] == json.loads(json.dumps(clip.describe()))
    assert manifest["modalities"] == ["fused"] and features.dims == {"fused": 16}
    assert manifest["n_items"] == dataset.n_items and manifest["dtype"] == "float32"
    assert len(manifest["item_order_hash"]) == 16 and len(manifest["key"]) == 16
    assert manifest["timing"]["encoded_items"] == dataset.n_items
    assert manifest["timing"]["items_per_second"] > 0
    # fused is missing only where both image and text are: item 11
    assert manifest["missing"]["modalities"]["fused"]["items"] == [11]
    reloaded = Dataset.load(dataset.root).feature_set("clip")
    np.testing.assert_array_equal(reloaded.arrays["fused"], features.arrays["fused"])
    assert reloaded.manifest["key"] == manifest["key"]


def test_mean_and_skip_policies(dataset: Dataset, clip) -> None:
    features = extract_features(dataset, clip, name="mean", missing="mean", num_workers=0)
    image = features.arrays["image"]
    mask = missing_mask(features, "image", dataset.n_items)
    np.testing.assert_allclose(image[mask], np.tile(image[~mask].mean(0), (mask.sum(), 1)))
    with pytest.raises(FeatureError, match="every modality was skipped"):  # both lack items
        extract_features(dataset, clip, name="skip", missing="skip", num_workers=0)


def test_skip_keeps_complete_modalities() -> None:
    status = {"image": np.array([PRESENT, ABSENT]), "text": np.array([PRESENT, PRESENT])}
    arrays = {"image": np.ones((2, 3), np.float32), "text": np.ones((2, 4), np.float32)}
    kept, report = apply_missing_policy(arrays, status, "skip")
    assert list(kept) == ["text"] and report["image"]["action"] == "skipped"
    with pytest.raises(FeatureError, match="every modality was skipped"):
        apply_missing_policy({"image": arrays["image"]}, status, "skip")
    unreadable = {"image": np.array([UNREADABLE, ABSENT])}
    with pytest.raises(FeatureError, match="no item has"):
        apply_missing_policy({"image": arrays["image"]}, unreadable, "zeros")


def test_existing_feature_set_is_reused_or_replaced(dataset: Dataset, clip) -> None:
    first = extract_features(dataset, clip, name="clip", num_workers=0)
    calls = _counting(clip)
    again = extract_features(dataset, clip, name="clip", num_workers=0)
    assert calls == [] and again.manifest == first.manifest
    extract_features(dataset, clip, name="clip", num_workers=0, missing="mean")
    assert sum(calls) == dataset.n_items  # another policy: re-extracted and replaced
    assert Dataset.load(dataset.root).feature_set("clip").manifest["missing"]["policy"] == "mean"


def test_interrupted_extraction_resumes_where_it_stopped(dataset: Dataset, clip, tmp_path) -> None:
    reference = extract_features(
        dataset, clip, name="whole", batch_size=4, num_workers=0, out_dir=tmp_path / "whole"
    )
    calls = _counting(clip, fail_after=5)
    with pytest.raises(Interrupted):
        extract_features(dataset, clip, name="clip", batch_size=4, chunk_batches=2, num_workers=0)
    work = dataset.root / "features" / ".clip.work"
    assert sorted(p.name for p in (work / "chunks").iterdir()) == [
        "000000000000.npz", "000000000008.npz",
    ]  # fmt: skip
    assert "clip" not in Dataset.load(dataset.root).features  # the hidden work folder is skipped
    del clip.forward  # back to the class's forward, counted without interruption
    calls = _counting(clip)
    resumed = extract_features(dataset, clip, name="clip", batch_size=4, num_workers=0)
    assert sum(calls) == dataset.n_items - 16  # 4 batches of 4 were saved in 2 chunks
    assert resumed.manifest["timing"]["resumed_items"] == 16
    assert not work.exists()
    for modality, array in reference.arrays.items():
        np.testing.assert_allclose(resumed.arrays[modality], array, rtol=0, atol=1e-6)


def test_workers_give_the_same_features(dataset: Dataset, clip, tmp_path: Path) -> None:
    kwargs = {"batch_size": 8, "progress": False}
    local = extract_features(dataset, clip, name="a", num_workers=0, **kwargs)
    workers = extract_features(dataset, clip, name="b", num_workers=2, **kwargs)
    for modality, array in local.arrays.items():
        np.testing.assert_allclose(workers.arrays[modality], array, rtol=0, atol=1e-6)


def test_bad_requests(dataset: Dataset, clip) -> None:
    with pytest.raises(ConfigError, match="cannot extract"):
        extract_features(dataset, clip, name="x", modalities=["audio"])
    with pytest.raises(ConfigError, match="folder name"):
        extract_features(dataset, clip, name="../x")
    with pytest.raises(ConfigError, match="policy"):
        extract_features(dataset, clip, name="x", missing="drop")  # type: ignore[arg-type]
    with pytest.raises(FeatureError, match="no item catalog"):
        extract_features(dataclasses.replace(dataset, catalog=None), clip, name="x")
    with pytest.raises(ConfigError, match="out_dir"):
        extract_features(dataclasses.replace(dataset, root=None), clip, name="x")
