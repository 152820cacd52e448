"""Pillow + numpy preprocessing matches transformers' image processors; tokenisation by tokens."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from lmmrec.encoders.preprocessing import (
    ImagePreprocessor,
    ImageTransform,
    ItemBatch,
    Preprocessor,
    TextPreprocessor,
)
from lmmrec.errors import ConfigError


def _processors() -> dict[str, object]:
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    from transformers.models.convnext.image_processing_pil_convnext import (
        ConvNextImageProcessorPil,
    )
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    return {
        "clip-default": CLIPImageProcessorPil(),
        "clip-small": CLIPImageProcessorPil(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        ),
        "vit": ViTImageProcessorPil(size={"height": 24, "width": 20}),
        "convnext-crop-pct": ConvNextImageProcessorPil(size={"shortest_edge": 32}, crop_pct=0.875),
        "convnext-large": ConvNextImageProcessorPil(size={"shortest_edge": 384}),
    }


@pytest.mark.parametrize("kind", list(_processors()))
def test_image_transform_matches_hf_processor(kind: str, images: list[Image.Image]) -> None:
    processor = _processors()[kind]
    transform = ImageTransform.from_hf(processor)
    expected = processor(images=images, return_tensors="np")["pixel_values"]
    ours = np.stack([transform(image) for image in images])
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5)


def test_clip_transform_defaults() -> None:
    transform = ImageTransform.from_hf(_processors()["clip-default"])
    assert transform.shortest_edge == 224 and transform.crop == (224, 224)
    assert transform.resample == Image.Resampling.BICUBIC
    assert transform.describe()["resample"] == "bicubic"


def test_missing_images_become_zero_rows(images: list[Image.Image]) -> None:
    part = ImagePreprocessor(ImageTransform(size=(8, 8), mean=(0.5,) * 3, std=(0.5,) * 3))
    out = part([images[0], None, images[1]])
    assert out["pixel_values"].shape == (3, 3, 8, 8)
    assert out["image_present"].tolist() == [True, False, True]
    assert torch.equal(out["pixel_values"][1], torch.zeros(3, 8, 8))


def test_transform_without_fixed_size_cannot_batch() -> None:
    with pytest.raises(ConfigError, match="crop"):
        ImagePreprocessor(ImageTransform(shortest_edge=32))([None])


def test_text_is_truncated_by_tokens_and_templated(sbert_folder) -> None:
    from transformers import BertTokenizer

    tokenizer = BertTokenizer.from_pretrained(sbert_folder)
    part = TextPreprocessor(tokenizer, max_length=6, template="a {text}")
    out = part(["red box " * 20, "", "bottle"])
    assert out["input_ids"].shape == (3, 6)  # [CLS] + 4 tokens + [SEP], padded to longest
    assert tokenizer.convert_ids_to_tokens(out["input_ids"][0].tolist()) == [
        "[CLS]", "a", "red", "box", "red", "[SEP]",
    ]  # fmt: skip
    assert out["text_present"].tolist() == [True, False, True]  # the template does not count
    fixed = TextPreprocessor(tokenizer, max_length=10, padding="max_length")(["bottle"])
    assert fixed["input_ids"].shape == (1, 10)


def test_template_must_hold_the_text() -> None:
    with pytest.raises(ConfigError, match="text"):
        TextPreprocessor(tokenizer=None, max_length=8, template="a photo")


def test_preprocessor_prepares_only_what_is_asked_and_pickles(sbert_folder) -> None:
    from transformers import BertTokenizer

    preprocessor = Preprocessor(
        image=ImagePreprocessor(ImageTransform(size=(8, 8))),
        text=TextPreprocessor(BertTokenizer.from_pretrained(sbert_folder), max_length=8),
    )
    assert set(preprocessor(ItemBatch(texts=["box"]))) == {
        "input_ids", "token_type_ids", "attention_mask", "text_present",
    }  # fmt: skip
    assert set(preprocessor(ItemBatch(images=[None]))) == {"pixel_values", "image_present"}
    clone = pickle.loads(pickle.dumps(preprocessor))  # DataLoader workers may receive a copy
    batch = ItemBatch(texts=["red box"], images=[None])
    assert all(torch.equal(clone(batch)[k], v) for k, v in preprocessor(batch).items())
    assert set(preprocessor.describe()) == {"image", "text"}
