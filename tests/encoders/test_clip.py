"""CLIP: loading from a folder, token-level truncation, equality with transformers' own pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from lmmrec import encoders
from lmmrec.encoders import ItemBatch
from lmmrec.errors import ConfigError


def test_tokenizer_loads_the_folder_vocabulary(clip_folder: Path, clip_vocab: dict) -> None:
    encoder = encoders.build(f"clip:{clip_folder}")
    vocab = clip_vocab
    ids = encoder.preprocess(ItemBatch(texts=["the red"]))["input_ids"][0].tolist()
    expected = ["<|startoftext|>", "the</w>", "red</w>", "<|endoftext|>"]
    assert ids == [vocab[t] for t in expected]


def test_text_is_truncated_to_77_tokens_not_characters(clip_folder: Path, clip_vocab) -> None:
    encoder = encoders.build(f"clip:{clip_folder}")
    long_text = "the red box and the blue bag " * 40  # far more than 77 tokens
    ids = encoder.preprocess(ItemBatch(texts=[long_text, "the"]))["input_ids"]
    assert ids.shape == (2, 77)
    assert ids[0, -1] == clip_vocab["<|endoftext|>"]  # EOS kept after truncation
    assert len(long_text) > 77 * 2  # a 77-character cut would have dropped most of it
    description = encoder.describe()["preprocessing"]["text"]
    assert description["truncation"] == {"unit": "tokens", "max_length": 77}


def test_outputs_equal_transformers_pipeline(clip_folder: Path, images: list[Image.Image]) -> None:
    from transformers import CLIPModel, CLIPProcessor

    encoder = encoders.build(f"clip:{clip_folder}")
    texts = ["the red bottle", "a blue box", "green lamp", "the hat", "a mug", "bag"]
    with torch.no_grad():
        ours = encoder(encoder.preprocess(ItemBatch(texts=texts, images=images)))
        model = CLIPModel.from_pretrained(clip_folder).eval()
        processor = CLIPProcessor.from_pretrained(clip_folder)
        batch = processor(text=texts, images=images, return_tensors="pt", padding=True)
        image = model.get_image_features(pixel_values=batch["pixel_values"]).pooler_output
        text = model.get_text_features(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).pooler_output
    torch.testing.assert_close(ours["image"], image, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours["text"], text, rtol=1e-5, atol=1e-6)


def test_normalize_option(clip_folder: Path, images: list[Image.Image]) -> None:
    encoder = encoders.build(f"clip:{clip_folder}", normalize=True)
    with torch.no_grad():
        out = encoder(encoder.preprocess(ItemBatch(texts=["the"] * 2, images=images[:2])))
    for vectors in out.values():
        torch.testing.assert_close(vectors.norm(dim=-1), torch.ones(2))
    assert encoder.describe()["normalize"] is True


def test_missing_processor_config_uses_model_image_size(clip_folder: Path, tmp_path: Path) -> None:
    for file in clip_folder.iterdir():
        if file.name != "preprocessor_config.json":
            (tmp_path / file.name).write_bytes(file.read_bytes())
    encoder = encoders.build(f"clip:{tmp_path}")
    assert encoder.preprocessor.image.transform.output_size == (32, 32)


def test_unloadable_sources_raise_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="clip needs a model"):
        encoders.build("clip")
    with pytest.raises(ConfigError, match="cannot load CLIP"):
        encoders.build(f"clip:{tmp_path}")  # empty folder
    with pytest.raises(ConfigError, match="cannot load CLIP"):
        encoders.build("clip:nobody/no-such-clip")  # hub id, offline and not cached
    with pytest.raises(ConfigError, match="'/no/such/folder': no such folder; give a local"):
        encoders.build("clip:/no/such/folder")
