"""Sentence-BERT and CNN encoders, including the two packaged real models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from lmmrec import encoders
from lmmrec.encoders import ItemBatch
from lmmrec.errors import ConfigError

TEXTS = ["the red bottle made of glass", "", "a blue box " * 30, "green hat"]


def _equals_encode(encoder) -> None:
    """Our differentiable forward gives what ``SentenceTransformer.encode`` gives."""
    out = encoder(encoder.preprocess(ItemBatch(texts=TEXTS)))["text"]
    assert out.requires_grad is False or out.grad_fn is not None
    expected = encoder.model.encode(TEXTS, convert_to_tensor=True)
    torch.testing.assert_close(out.detach(), expected, rtol=1e-5, atol=1e-6)


def test_sbert_forward_equals_encode(sbert_folder: Path) -> None:
    encoder = encoders.build(f"sbert:{sbert_folder}")
    _equals_encode(encoder)
    assert encoder.output_dims() == {"text": 32}
    assert encoder.describe()["preprocessing"]["text"]["truncation"]["max_length"] == 16


def test_sbert_default_is_the_packaged_minilm() -> None:
    """The real all-MiniLM-L6-v2 (MMRec's text encoder): 384-d, unit norm, equal to encode."""
    encoder = encoders.build("sbert:default")
    assert encoder.output_dims() == {"text": 384}
    _equals_encode(encoder)
    encoder.apply_strategy("full")
    out = encoder(encoder.preprocess(ItemBatch(texts=TEXTS[:1])))["text"]
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(1))
    out.sum().backward()  # differentiable, unlike encode()
    assert encoder.model[0].model.encoder.layer[0].attention.self.query.weight.grad is not None


def test_sbert_rejects_a_folder_without_modules_json(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"modules\.json"):
        encoders.build(f"sbert:{tmp_path}")


def test_cnn_default_is_imagenet_efficientnet_lite0(images: list[Image.Image]) -> None:
    encoder = encoders.build("cnn:default")
    assert encoder.output_dims() == {"image": 1280}
    transform = encoder.preprocessor.image.transform
    assert transform.output_size == (224, 224)
    with torch.no_grad():
        out = encoder(encoder.preprocess(ItemBatch(images=images[:2])))["image"]
    assert out.shape == (2, 1280) and (out >= 0).all()  # pooled ReLU6 maps
    encoder.train()
    batch_norms = [m for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert batch_norms and not any(m.training for m in batch_norms)
    assert encoder.backbone.net._blocks[0].training  # the rest does switch


@pytest.mark.parametrize("folder", ["vit_folder", "resnet_folder"])
def test_cnn_hf_backbone_dims(folder: str, request: pytest.FixtureRequest) -> None:
    encoder = encoders.build(f"cnn:{request.getfixturevalue(folder)}")
    assert encoder.output_dims() == {"image": {"vit_folder": 32, "resnet_folder": 16}[folder]}


def test_cnn_needs_config_and_processor(tmp_path: Path, vit_folder: Path) -> None:
    with pytest.raises(ConfigError, match=r"config\.json"):
        encoders.build(f"cnn:{tmp_path}")
    (tmp_path / "config.json").write_bytes((vit_folder / "config.json").read_bytes())
    with pytest.raises(ConfigError, match=r"preprocessor_config\.json"):
        encoders.build(f"cnn:{tmp_path}")


@pytest.mark.parametrize("shown", [True, False])
def test_loading_hides_transformers_progress_bar_and_restores_it(shown: bool) -> None:
    from transformers.utils import logging as hf_logging

    from lmmrec.encoders.base import quiet_loading

    (hf_logging.enable_progress_bar if shown else hf_logging.disable_progress_bar)()
    try:
        with quiet_loading():
            assert not hf_logging.is_progress_bar_enabled()
        assert hf_logging.is_progress_bar_enabled() is shown
    finally:
        hf_logging.enable_progress_bar()
