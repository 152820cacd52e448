"""Bundles: a lossless, pickle-free round trip; damage is detected; export from a real run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from lmmrec.data.dataset import Dataset
from lmmrec.errors import DataError
from lmmrec.serving.bundle import ITEMS, MANIFEST, USERS, VECTORS, Bundle, export_bundle
from lmmrec.training import RunConfig, TrainConfig, train
from lmmrec.training.run import load_run


def test_round_trip_keeps_everything(bundle: Bundle, tmp_path: Path) -> None:
    loaded = Bundle.load(bundle.save(tmp_path / "b"))
    assert np.array_equal(loaded.user_vecs, bundle.user_vecs)
    assert np.array_equal(loaded.item_vecs, bundle.item_vecs)
    assert list(loaded.user_ids) == list(bundle.user_ids)
    assert list(loaded.item_ids) == list(bundle.item_ids)
    assert (loaded.seen != bundle.seen).nnz == 0
    assert loaded.texts == bundle.texts
    assert loaded.images == bundle.images
    assert loaded.manifest["model"] == "random"
    assert loaded.manifest["content_hash"] == bundle.content_hash()
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == sorted(
        [MANIFEST, VECTORS, USERS, ITEMS]
    )


def test_a_damaged_or_foreign_folder_is_refused(bundle: Bundle, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"not a serving bundle.*lmmrec export"):
        Bundle.load(tmp_path)
    path = bundle.save(tmp_path / "b")
    manifest = json.loads((path / MANIFEST).read_text())
    (path / MANIFEST).write_text(json.dumps({**manifest, "content_hash": "0" * 16}))
    with pytest.raises(DataError, match="content hash differs"):
        Bundle.load(path)
    (path / MANIFEST).write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(DataError, match="export the bundle again"):
        Bundle.load(path)


def test_inconsistent_parts_are_refused(bundle: Bundle) -> None:
    with pytest.raises(DataError, match="39 item vectors"):
        Bundle(
            user_vecs=bundle.user_vecs,
            item_vecs=bundle.item_vecs[:39],
            user_ids=bundle.user_ids,
            item_ids=bundle.item_ids,
            seen=bundle.seen,
            texts=bundle.texts,
            images=bundle.images,
        )
    with pytest.raises(DataError, match="item ids are not unique"):
        Bundle(
            user_vecs=bundle.user_vecs,
            item_vecs=bundle.item_vecs,
            user_ids=bundle.user_ids,
            item_ids=["same"] * bundle.n_items,
            seen=bundle.seen,
            texts=bundle.texts,
            images=bundle.images,
        )


def test_a_failed_save_leaves_the_previous_bundle(bundle: Bundle, tmp_path: Path) -> None:
    path = bundle.save(tmp_path / "b")
    bundle.texts = bundle.texts[:-1]  # breaks the Parquet frame: the save fails half-way
    with pytest.raises(ValueError):
        bundle.save(path)
    assert Bundle.load(path).n_items == 40
    assert [p.name for p in tmp_path.iterdir()] == ["b"]  # no temporary left behind


def test_export_writes_the_runs_final_vectors(
    tiny_dataset: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = RunConfig(
        model="bpr",
        output_dir=str(tmp_path),
        name="run",
        model_params={"embedding_size": 8},
        train=TrainConfig(epochs=2, batch_size=64, ks=[5, 10]),
    )
    result = train(config, dataset=tiny_dataset)
    monkeypatch.setattr("lmmrec.training.run.load_dataset", lambda source: tiny_dataset)
    path = export_bundle(result.run_dir, tmp_path / "bundle")
    loaded = Bundle.load(path)
    _, _, trainer = load_run(result.run_dir)
    users, items = trainer.embed()
    assert torch.equal(torch.from_numpy(loaded.user_vecs), users)
    assert torch.equal(torch.from_numpy(loaded.item_vecs), items)
    assert list(loaded.user_ids) == tiny_dataset.user_ids.astype(str).tolist()
    everything = tiny_dataset.train + tiny_dataset.valid + tiny_dataset.test
    assert (loaded.seen != (everything > 0)).nnz == 0
    manifest = loaded.manifest
    assert manifest["model"] == "bpr"
    # without features it cannot place new items, and says how it could
    assert manifest["content"] is None and "train it with features=NAME" in manifest["no_content"]
    assert manifest["cold_items"]["placed_by_content"] == 0
    assert manifest["dataset_hash"] == tiny_dataset.content_hash()
    assert manifest["metrics"]["test"] == pytest.approx(result.fit.test)
    # tensors are plain safetensors: readable without torch or pickles
    assert set(load_file(str(path / VECTORS))) == {
        "user_vecs",
        "item_vecs",
        "seen_indptr",
        "seen_items",
    }
