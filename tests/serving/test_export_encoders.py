"""Which encoder a bundle carries for a frozen run on a saved (fine-tuned) encoder's features: found
under the dataset's ``encoders/`` by its checkpoint hash, given with ``encoder=``, and refused in
one line when it is missing or is not the encoder that made the features."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from content_fixtures import ENCODER, content_dataset, train_frozen

from lmmrec.encoders import build, extract_features, load_encoder
from lmmrec.errors import ConfigError
from lmmrec.serving.bundle import Bundle, export_bundle

pytest.importorskip("fastapi")


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(run_dir, tuned_folder)``: a frozen VBPR run on the features of a ``servingtiny`` whose
    projection heads were changed and saved under the dataset's ``encoders/``, as
    ``lmmrec finetune`` leaves one."""
    root = tmp_path_factory.mktemp("tuned")
    dataset = content_dataset(root / "data")
    encoder = build(ENCODER)
    encoder.apply_strategy("projection")
    with torch.no_grad():
        encoder.text_head.weight.mul_(-1.0)  # no longer the spec's own weights
    tuned = encoder.save(root / "data" / "encoders" / "tuned")
    extract_features(dataset, load_encoder(tuned), name="tuned", num_workers=0, progress=False)
    return train_frozen(dataset, root, "tuned", epochs=1), tuned


def _text_head(bundle_dir: Path) -> torch.Tensor:
    encoder = Bundle.load(bundle_dir).content.load_encoder()  # type: ignore[union-attr]
    return encoder.text_head.weight.detach()


def test_export_finds_the_saved_encoder_that_made_the_features(
    tuned_run: tuple[Path, Path], tmp_path: Path
) -> None:
    run_dir, tuned = tuned_run
    bundle_dir = export_bundle(run_dir, tmp_path / "bundle")
    torch.testing.assert_close(_text_head(bundle_dir), load_encoder(tuned).text_head.weight)
    assert not torch.equal(_text_head(bundle_dir), build(ENCODER).text_head.weight)


def test_a_moved_saved_encoder_is_asked_for_and_then_taken_from_the_option(
    tuned_run: tuple[Path, Path], tmp_path: Path
) -> None:
    run_dir, tuned = tuned_run
    moved = Path(shutil.move(tuned, tmp_path / "elsewhere"))
    try:
        with pytest.raises(ConfigError, match="--encoder FOLDER"):
            export_bundle(run_dir, tmp_path / "bundle")
        bundle_dir = export_bundle(run_dir, tmp_path / "bundle", encoder=moved)
        torch.testing.assert_close(_text_head(bundle_dir), load_encoder(moved).text_head.weight)
    finally:
        shutil.move(moved, tuned)


def test_an_encoder_that_did_not_make_the_features_is_refused(
    tuned_run: tuple[Path, Path], tmp_path: Path
) -> None:
    run_dir, _ = tuned_run
    with pytest.raises(ConfigError, match=r"its weights differ .* --encoder SPEC_OR_FOLDER"):
        export_bundle(run_dir, tmp_path / "bundle", encoder=ENCODER)  # the base weights
    assert not (tmp_path / "bundle").exists()
