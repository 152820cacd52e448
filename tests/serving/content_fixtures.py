"""A deterministic tiny item encoder, a planted dataset with content, and a frozen VBPR run on it
exported as a bundle that can place new items (nothing downloaded, a few seconds in all).

``servingtiny`` is registered under its name so that a saved encoder folder (a bundle's
``content/encoder``) is rebuilt from its spec: its weights come from a fixed seed, as the
packaged encoders' come from their files. Texts are bags of words over :data:`WORDS`; images are
4x4 thumbnails.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from lmmrec.data.dataset import Dataset
from lmmrec.encoders.base import ItemEncoder, Layout
from lmmrec.encoders.preprocessing import (
    ImagePreprocessor,
    ImageTransform,
    Preprocessor,
    TextPreprocessor,
)
from lmmrec.encoders.registry import register
from planted import planted_content

WORDS = ["[PAD]", "red", "green", "blue", "yellow", "soft", "bright", "toy", "mug", "shirt"]
COLOURS = ((220, 40, 40), (40, 200, 40), (40, 40, 220), (230, 220, 40))
ENCODER = "servingtiny"


class Words:
    """Whitespace tokenizer over :data:`WORDS` (unknown words dropped), padded with id 0."""

    def __call__(self, texts: list[str], **_: Any) -> dict[str, torch.Tensor]:
        ids = [[WORDS.index(w) for w in t.split() if w in WORDS][:8] or [0] for t in texts]
        length = max(len(i) for i in ids)
        input_ids = torch.tensor([i + [0] * (length - len(i)) for i in ids])
        return {"input_ids": input_ids, "attention_mask": (input_ids > 0).long()}


@register
class ServingTiny(ItemEncoder):
    """Text: mean word embedding -> 6-d head; image: 4x4 pixels -> 5-d head. Seeded weights."""

    name = ENCODER

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.words = nn.Embedding(len(WORDS), 6)
        self.text_head = nn.Linear(6, 6)
        self.image_head = nn.Linear(3 * 4 * 4, 5)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
        transform = ImageTransform(size=(4, 4), mean=(0.5,) * 3, std=(0.5,) * 3)
        self.preprocessor = Preprocessor(
            image=ImagePreprocessor(transform), text=TextPreprocessor(Words(), max_length=8)
        )

    @classmethod
    def from_spec(cls, arg: str | None) -> ServingTiny:
        return cls()

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        if "input_ids" in inputs:
            mask = inputs["attention_mask"].float()[..., None]  # [B, L, 1]
            pooled = (self.words(inputs["input_ids"]) * mask).sum(1) / mask.sum(1).clamp_min(1)
            out["text"] = self.text_head(pooled)  # [B, 6]
        if "pixel_values" in inputs:
            out["image"] = self.image_head(inputs["pixel_values"].flatten(1))  # [B, 5]
        return out

    def output_dims(self) -> dict[str, int]:
        return {"image": 5, "text": 6}

    def layout(self) -> Layout:
        return Layout(towers={"text": [self.words]}, projections=[self.text_head, self.image_head])


def png_bytes(colour: tuple[int, int, int], seed: int) -> bytes:
    """A 12x12 PNG tinted ``colour`` with seeded noise."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.normal(0, 25, (12, 12, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def content_dataset(folder: Path) -> Dataset:
    """The planted dataset (40 items in 4 groups) saved in ``folder`` with a catalogue: each
    item's text names its group's colour, its image is tinted in it; item 5 has no image and item
    6 no text."""
    return planted_content(
        folder, WORDS[1:5], WORDS[5:], lambda group, item, _: png_bytes(COLOURS[group], item)
    )


def frozen_run(folder: Path, model: str = "vbpr") -> Path:
    """A frozen ``model`` run (2 epochs) on ``servingtiny`` features of :func:`content_dataset`;
    returns the run directory."""
    from lmmrec.encoders import build, extract_features

    dataset = content_dataset(folder / "data")
    extract_features(dataset, build(ENCODER), name="tiny", num_workers=0, progress=False)
    return train_frozen(dataset, folder, "tiny", model)


def train_frozen(
    dataset: Dataset, folder: Path, features: str, model: str = "vbpr", epochs: int = 2
) -> Path:
    """A frozen ``model`` run on ``dataset`` (saved in ``folder / "data"``) and its feature set
    ``features``, into ``folder / "runs"``; returns the run directory."""
    from lmmrec.training import RunConfig, TrainConfig, train

    config = RunConfig(
        dataset=str(folder / "data"),
        model=model,
        features=features,
        output_dir=str(folder / "runs"),
        name=model,
        model_params={"embedding_size": 8},
        train=TrainConfig(epochs=epochs, batch_size=64, ks=[5]),
    )
    return train(config, dataset=dataset).run_dir
