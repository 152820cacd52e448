"""CLIP (Radford et al., ICML 2021, arXiv 2103.00020) as an item encoder, via transformers.

The paper's code (§3.3) loads OpenAI's ``ViT-B/16`` and keeps ``encode_image`` and
``encode_text`` as two separate 512-d item features. Here any ``CLIPModel`` folder (or a hub id
such as ``openai/clip-vit-base-patch16`` on a machine with internet) gives:

* ``image``: ``get_image_features(...).pooler_output``, the projected image embedding;
* ``text``: the projected text embedding of the text truncated to 77 **tokens** (the paper's code
  cut the text to 77 *characters* first, which throws most of it away);
* ``fused`` (only when asked for): the L2-normalised mean of the normalised image and text
  vectors (:func:`~lmmrec.encoders.base.fuse`).

``image``/``text`` are the raw projected embeddings, as the paper stored them; ``normalize=True``
L2-normalises them. Image preprocessing follows the folder's ``CLIPImageProcessor`` config
(shorter side to 224 bicubic, center crop 224, CLIP mean/std) in Pillow + numpy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lmmrec.encoders.base import ItemEncoder, Layout, fuse, quiet_loading
from lmmrec.encoders.preprocessing import (
    CLIP_MEAN,
    CLIP_STD,
    ImagePreprocessor,
    ImageTransform,
    Preprocessor,
    TextPreprocessor,
)
from lmmrec.encoders.registry import register
from lmmrec.errors import ConfigError

MAX_TOKENS = 77


@register
class CLIPEncoder(ItemEncoder):
    """Image and text -> ``{"image", "text", "fused"}``, each ``[B, D]`` (D = 512 for ViT-B)."""

    name = "clip"
    temperature_name = "model.logit_scale"  # CLIP's own learnable temperature

    def __init__(self, source: str, *, template: str = "{text}", normalize: bool = False) -> None:
        super().__init__()
        from transformers import AutoImageProcessor, CLIPModel, CLIPTokenizer

        folder = Path(source).expanduser()
        fix = (
            "give a local folder saved with CLIPModel.save_pretrained and the tokenizer's "
            "save_pretrained (offline, hub ids only work if already cached)"
        )
        if source.startswith(("/", ".", "~")) and not folder.is_dir():
            raise ConfigError(f"cannot load CLIP from {source!r}: no such folder; {fix}")
        try:
            with quiet_loading():
                self.model = CLIPModel.from_pretrained(str(folder) if folder.is_dir() else source)
            tokenizer = CLIPTokenizer.from_pretrained(str(folder) if folder.is_dir() else source)
        except (OSError, ValueError) as error:
            raise ConfigError(f"cannot load CLIP from {source!r} ({error}); {fix}") from None
        size = int(self.model.config.vision_config.image_size)
        if (folder / "preprocessor_config.json").is_file():
            transform = ImageTransform.from_hf(
                AutoImageProcessor.from_pretrained(folder, backend="pil")
            )
        else:
            transform = ImageTransform(
                shortest_edge=size, crop=(size, size), mean=CLIP_MEAN, std=CLIP_STD
            )
        if transform.output_size != (size, size):
            raise ConfigError(
                f"{source}: the image processor makes {transform.output_size} images but the "
                f"vision model takes {size} x {size}; fix preprocessor_config.json"
            )
        max_length = min(MAX_TOKENS, int(self.model.config.text_config.max_position_embeddings))
        self.preprocessor = Preprocessor(
            image=ImagePreprocessor(transform),
            text=TextPreprocessor(tokenizer, max_length=max_length, template=template),
        )
        self.normalize = normalize

    @classmethod
    def from_spec(
        cls, arg: str | None, *, template: str = "{text}", normalize: bool = False
    ) -> CLIPEncoder:
        """``clip:/path/to/folder`` or ``clip:openai/clip-vit-base-patch16``."""
        if not arg:
            raise ConfigError(
                "clip needs a model: clip:/path/to/clip-folder (or a hub id such as "
                "clip:openai/clip-vit-base-patch16 where the hub is reachable)"
            )
        return cls(arg, template=template, normalize=normalize)

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``pixel_values`` ``[B, 3, S, S]`` and/or ``input_ids``/``attention_mask`` ``[B, L]``
        -> ``image`` / ``text`` ``[B, D]``, plus ``fused`` ``[B, D]`` when both are given."""
        out: dict[str, torch.Tensor] = {}
        if "pixel_values" in inputs:
            image = self.model.get_image_features(pixel_values=inputs["pixel_values"])
            out["image"] = image.pooler_output
        if "input_ids" in inputs:
            text = self.model.get_text_features(
                input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
            )
            out["text"] = text.pooler_output
        if self.normalize:
            out = {m: F.normalize(v, dim=-1) for m, v in out.items()}
        if len(out) == 2:
            out["fused"] = fuse(
                out["image"], out["text"], inputs["image_present"], inputs["text_present"]
            )
        return out

    def output_dims(self) -> dict[str, int]:
        dim = int(self.model.config.projection_dim)
        return {"image": dim, "text": dim, "fused": dim}

    def layout(self) -> Layout:
        vision, text = self.model.vision_model, self.model.text_model
        return Layout(
            towers={"image": vision.encoder.layers, "text": text.encoder.layers},
            tops=[vision.post_layernorm, text.final_layer_norm],
            projections=[self.model.visual_projection, self.model.text_projection],
        )

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"normalize": self.normalize}
