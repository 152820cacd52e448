"""``lmmrec encode`` and ``lmmrec features`` end to end on a tiny dataset folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from lmmrec.cli import app
from lmmrec.data.dataset import Dataset
from lmmrec.errors import ConfigError

runner = CliRunner()


def test_encode_list_and_export(catalog_dataset: Dataset, clip_folder: Path, tmp_path) -> None:
    root = str(catalog_dataset.root)
    args = ["encode", "--dataset", root, "--encoder", f"clip:{clip_folder}", "--workers", "0"]
    result = runner.invoke(app, [*args, "--modalities", "image,text", "--option", "normalize=true"])
    assert result.exit_code == 0, result.output
    name = f"clip-{clip_folder.name}"
    features = Dataset.load(catalog_dataset.root).feature_set(name)
    assert features.manifest["encoder"]["normalize"] is True
    np.testing.assert_allclose(np.linalg.norm(features.arrays["text"][:2], axis=1), 1, rtol=1e-5)
    flat = "".join(result.output.split())  # rich wraps long paths at the terminal width
    assert "missingitems" in flat and f"features/{name}" in flat
    listed = runner.invoke(app, ["features", "list", root])
    assert listed.exit_code == 0 and name in listed.output
    out = tmp_path / "mmrec"
    exported = runner.invoke(
        app, ["features", "export-mmrec", "--dataset", root, "--name", name, "--out", str(out)]
    )
    assert exported.exit_code == 0, exported.output
    np.testing.assert_array_equal(np.load(out / "image_feat.npy"), features.arrays["image"])


def test_encode_reports_bad_options(catalog_dataset: Dataset, clip_folder: Path) -> None:
    args = ["encode", "--dataset", str(catalog_dataset.root), "--encoder", f"clip:{clip_folder}"]
    result = runner.invoke(app, [*args, "--option", "dim=3"])
    assert isinstance(result.exception, ConfigError) and "unknown options" in str(result.exception)
