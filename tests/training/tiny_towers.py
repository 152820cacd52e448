"""Tiny trainable item towers and a planted dataset with item content, for end-to-end tests.

The towers are real :class:`ItemEncoder` s (registered as ``tinyimage`` and ``tinytext``), small
enough that a training step takes milliseconds: ``dual:tinyimage+tinytext`` is a CLIP-style dual
encoder over them. The planted dataset's items carry a text naming their group and an image
tinted in their group's colour, so content predicts preferences.
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
GROUP_WORDS = ("red", "green", "blue", "yellow")
GROUP_COLOURS = ((220, 40, 40), (40, 200, 40), (40, 40, 220), (230, 220, 40))


class WordTokenizer:
    """Whitespace tokenizer over :data:`WORDS`, padding to the longest text (id 0)."""

    def __call__(self, texts: list[str], **_: Any) -> dict[str, torch.Tensor]:
        ids = [[WORDS.index(w) for w in t.split() if w in WORDS][:8] or [0] for t in texts]
        length = max(len(i) for i in ids)
        input_ids = torch.tensor([i + [0] * (length - len(i)) for i in ids])
        return {"input_ids": input_ids, "attention_mask": (input_ids > 0).long()}


class Block(nn.Module):
    """A residual self-attention block with ``q_proj`` / ``v_proj`` (LoRA targets)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(dim, dim) for _ in range(3))
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # [B, L, D], [B, L]
        scores = self.q_proj(x) @ self.k_proj(x).transpose(1, 2) / x.shape[-1] ** 0.5
        scores = scores.masked_fill(~mask[:, None, :], -1e4)
        return x + self.out(torch.softmax(scores, -1) @ self.v_proj(x))


class TinyTower(ItemEncoder):
    """Tokens (text: word embeddings; image: 4x4-pixel patches) -> 2 blocks -> masked mean."""

    modality: str

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.layers = nn.ModuleList([Block(dim), Block(dim)])
        self.norm = nn.LayerNorm(dim)
        self.dim = dim

    @classmethod
    def from_spec(cls, arg: str | None) -> TinyTower:
        return cls()

    def tokens(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x, mask = self.tokens(inputs)
        for layer in self.layers:
            x = layer(x, mask)
        x = self.norm(x) * mask[..., None]
        return {self.modality: x.sum(1) / mask.sum(1, keepdim=True).clamp_min(1)}

    def output_dims(self) -> dict[str, int]:
        return {self.modality: self.dim}

    def layout(self) -> Layout:
        return Layout(towers={self.modality: list(self.layers)}, tops=[self.norm])


@register
class TinyImage(TinyTower):
    name = "tinyimage"
    modality = "image"

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Linear(3 * 4 * 4, self.dim)
        transform = ImageTransform(size=(8, 8), mean=(0.5,) * 3, std=(0.5,) * 3)
        self.preprocessor = Preprocessor(image=ImagePreprocessor(transform))

    def tokens(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = inputs["pixel_values"]  # [B, 3, 8, 8] -> 4 patches of 4x4
        patches = pixels.unfold(2, 4, 4).unfold(3, 4, 4).permute(0, 2, 3, 1, 4, 5)
        x = self.patch(patches.reshape(len(pixels), 4, -1))
        return x, torch.ones(x.shape[:2], dtype=torch.bool)


@register
class TinyText(TinyTower):
    name = "tinytext"
    modality = "text"

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(len(WORDS), self.dim)
        self.preprocessor = Preprocessor(text=TextPreprocessor(WordTokenizer(), max_length=8))

    def tokens(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embedding(inputs["input_ids"]), inputs["attention_mask"].bool()


TINY_DUAL = "dual:tinyimage+tinytext"


def content_dataset(folder: Path) -> Dataset:
    """The planted dataset (40 items, 4 groups) with a catalog saved in ``folder``: each item's
    text names its group's colour plus noise words, its image is tinted in that colour; item 5
    has no image and item 6 no text."""

    def image(group: int, item: int, rng: np.random.Generator) -> bytes:
        noise = rng.normal(0, 25, (12, 12, 3))
        pixels = np.clip(np.array(GROUP_COLOURS[group]) + noise, 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        return buffer.getvalue()

    return planted_content(folder, GROUP_WORDS, WORDS[5:], image)
