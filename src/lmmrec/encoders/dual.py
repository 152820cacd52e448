"""Two-tower item encoders assembled from any image encoder and any text encoder.

* ``pair``: the two towers side by side, each output as its encoder makes it (``pair:default`` =
  EfficientNet-Lite0 1280-d images + MiniLM 384-d texts, the modality-specific features of the
  paper's baselines, §3.2).
* ``dual``: a CLIP-style dual encoder (Radford et al., ICML 2021, arXiv 2103.00020, Fig. 3): each
  tower's vector goes through a linear projection (no bias) into one shared ``dim``-d space and
  is L2-normalised, so image-text contrastive fine-tuning can align the towers. With the packaged
  towers (``dual:default``) it is a real, offline, trainable multi-modal encoder. The projections
  start as seeded random orthogonal maps, which preserve the towers' geometry up to the drop in
  dimension, so even untrained ``dual`` features are usable; ``fused`` is their normalised mean.

Spec argument: ``default`` or ``<image spec>+<text spec>``, e.g.
``dual:clip:/models/clip+sbert:default``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmmrec.encoders.base import ItemEncoder, Layout, fuse
from lmmrec.encoders.preprocessing import IMAGE_KEYS, TEXT_KEYS, Preprocessor, select
from lmmrec.encoders.registry import build, register
from lmmrec.errors import ConfigError

DEFAULT_TOWERS = ("cnn:default", "sbert:default")


def _build_towers(arg: str | None) -> tuple[ItemEncoder, ItemEncoder]:
    """``default`` or ``"<image spec>+<text spec>"`` -> the two tower encoders."""
    specs = DEFAULT_TOWERS if arg in (None, "default") else tuple(arg.split("+"))
    if len(specs) != 2:
        raise ConfigError(
            f"two-tower spec argument {arg!r} must be 'default' or '<image spec>+<text spec>', "
            "e.g. cnn:default+sbert:default"
        )
    return build(specs[0]), build(specs[1])


@register
class PairEncoder(ItemEncoder):
    """Image tower + text tower -> ``{"image": [B, D_i], "text": [B, D_t]}``."""

    name = "pair"

    def __init__(self, image_encoder: ItemEncoder, text_encoder: ItemEncoder) -> None:
        super().__init__()
        for modality, encoder in (("image", image_encoder), ("text", text_encoder)):
            part = getattr(encoder.preprocessor, modality)
            if modality not in encoder.output_dims() or part is None:
                raise ConfigError(
                    f"{self.name}: {encoder.spec!r} cannot be the {modality} tower: it makes no "
                    f"{modality} vectors"
                )
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.preprocessor = Preprocessor(
            image=image_encoder.preprocessor.image, text=text_encoder.preprocessor.text
        )

    @classmethod
    def from_spec(cls, arg: str | None) -> PairEncoder:
        """``pair:default`` or ``pair:<image spec>+<text spec>``."""
        return cls(*_build_towers(arg))

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each tower on its own inputs: ``image`` ``[B, D_i]`` and/or ``text`` ``[B, D_t]``."""
        out: dict[str, torch.Tensor] = {}
        if "pixel_values" in inputs:
            out["image"] = self.image_encoder(select(inputs, IMAGE_KEYS))["image"]
        if "input_ids" in inputs:
            out["text"] = self.text_encoder(select(inputs, TEXT_KEYS))["text"]
        return out

    def output_dims(self) -> dict[str, int]:
        return {
            "image": self.image_encoder.output_dims()["image"],
            "text": self.text_encoder.output_dims()["text"],
        }

    def layout(self) -> Layout:
        return (
            Layout()
            .merged(self.image_encoder.layout(), "image_encoder")
            .merged(self.text_encoder.layout(), "text_encoder")
        )

    def describe(self) -> dict[str, Any]:
        towers = {"image_encoder": self.image_encoder.spec, "text_encoder": self.text_encoder.spec}
        return super().describe() | towers


@register
class DualEncoder(PairEncoder):
    """Image and text projected into one ``dim``-d space -> ``image``, ``text``, ``fused``."""

    name = "dual"

    def __init__(
        self, image_encoder: ItemEncoder, text_encoder: ItemEncoder, dim: int = 256, seed: int = 0
    ) -> None:
        super().__init__(image_encoder, text_encoder)
        if dim < 1:
            raise ConfigError(f"dual: dim must be a positive integer, got {dim}")
        tower_dims = super().output_dims()
        self.image_head = nn.Linear(tower_dims["image"], dim, bias=False)
        self.text_head = nn.Linear(tower_dims["text"], dim, bias=False)
        generator = torch.Generator().manual_seed(seed)
        for head in (self.image_head, self.text_head):
            nn.init.orthogonal_(head.weight, generator=generator)
        self.dim, self.seed = dim, seed

    @classmethod
    def from_spec(cls, arg: str | None, *, dim: int = 256, seed: int = 0) -> DualEncoder:
        """``dual:default`` or ``dual:<image spec>+<text spec>``; ``dim`` of the shared space."""
        return cls(*_build_towers(arg), dim=dim, seed=seed)

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Tower vectors -> projected, L2-normalised ``[B, dim]``; ``fused`` when both exist."""
        return self.project(self.towers(inputs), inputs)

    def towers(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The towers' own vectors, before the heads: ``image`` ``[B, D_i]``, ``text``
        ``[B, D_t]``. When only the heads train (strategy ``projection``), end-to-end training
        computes these once per item and trains the heads on them."""
        return super().forward(inputs)

    def towers_encoder(self) -> PairEncoder:
        """The two towers alone, as the ``pair`` encoder that makes :meth:`towers`' vectors
        (its ``describe()`` identifies stored features those towers made)."""
        return PairEncoder(self.image_encoder, self.text_encoder)

    def project(
        self, towers: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The heads on tower vectors (``inputs`` supplies the ``*_present`` masks)."""
        heads = {"image": self.image_head, "text": self.text_head}
        out = {m: F.normalize(heads[m](v), dim=-1) for m, v in towers.items()}  # [B, dim]
        if len(out) == 2:
            out["fused"] = fuse(
                out["image"], out["text"], inputs["image_present"], inputs["text_present"]
            )
        return out

    def output_dims(self) -> dict[str, int]:
        return dict.fromkeys(("image", "text", "fused"), self.dim)

    def layout(self) -> Layout:
        layout = super().layout()
        layout.projections += [self.image_head, self.text_head]
        return layout

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"dim": self.dim, "seed": self.seed}
