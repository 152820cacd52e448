"""Catalog items -> encoder inputs: image transforms and tokenisation, with Pillow and numpy.

Everything here is plain, picklable data (no model weights), so it runs in ``DataLoader`` worker
processes. Image preprocessing reproduces the Hugging Face image processors' PIL backend (resize,
center crop, rescale, normalise; ``transformers.image_processing_backends.PilBackend``) without
torchvision, which cannot be installed beside a CPU-only torch here.

Dimensions: B batch, L tokens, H x W pixels.

Input keys produced (and read by the encoders' ``forward``):

* image: ``pixel_values`` ``[B, 3, H, W]`` float32 and ``image_present`` ``[B]`` bool;
* text: ``input_ids`` / ``attention_mask`` (``token_type_ids`` for BERT-style tokenizers)
  ``[B, L]`` int64 and ``text_present`` ``[B]`` bool.

A missing image (``None``) becomes an all-zero ``pixel_values`` row and an empty text is tokenised
as it is; both are flagged ``False`` in the ``*_present`` mask, which the missing-modality policy
of feature extraction reads (``lmmrec.encoders.features``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from lmmrec.errors import ConfigError

IMAGE_KEYS = ("pixel_values", "image_present")
TEXT_KEYS = ("input_ids", "attention_mask", "token_type_ids", "text_present")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class ItemBatch:
    """Raw content of B items; ``None`` for a modality that is not needed at all.

    Attributes:
        texts: B strings; ``""`` (or whitespace) is a missing text.
        images: B RGB images; ``None`` marks a missing or unreadable image.
    """

    texts: list[str] | None = None
    images: list[Image.Image | None] | None = None


def select(inputs: dict[str, torch.Tensor], keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The entries of ``inputs`` named in ``keys`` (e.g. :data:`IMAGE_KEYS`)."""
    return {k: v for k, v in inputs.items() if k in keys}


@dataclass(frozen=True)
class ImageTransform:
    """Resize, center-crop and normalise one image, as the HF PIL image processors do.

    Attributes:
        size: ``(height, width)`` to resize to, or ``None`` to keep the image's size.
        shortest_edge: instead of ``size``, resize so that the shorter side has this length,
            keeping the aspect ratio (the longer side is truncated to an integer, as in HF).
        crop: ``(height, width)`` of the center crop after resizing, or ``None``.
        mean, std: per-channel normalisation of pixels rescaled to ``[0, 1]``.
        resample: a ``PIL.Image.Resampling`` value (3 = bicubic).
    """

    size: tuple[int, int] | None = None
    shortest_edge: int | None = None
    crop: tuple[int, int] | None = None
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    resample: int = Image.Resampling.BICUBIC

    def __post_init__(self) -> None:
        if self.size is not None and self.shortest_edge is not None:
            raise ConfigError("ImageTransform: give size or shortest_edge, not both")

    @property
    def output_size(self) -> tuple[int, int]:
        """``(H, W)`` of every output; images of one batch must share it."""
        fixed = self.crop or self.size
        if fixed is None:
            raise ConfigError(
                "ImageTransform: without a crop or a fixed size, outputs vary with the image; "
                "set crop=(H, W) or size=(H, W)"
            )
        return fixed

    def _resize_target(self, width: int, height: int) -> tuple[int, int]:
        """``(width, height)`` after resizing an image of ``width x height``."""
        if self.size is not None:
            return self.size[1], self.size[0]
        if self.shortest_edge is None:
            return width, height
        short, long = min(width, height), max(width, height)
        new_long = int(self.shortest_edge * long / short)
        if width <= height:
            return self.shortest_edge, new_long
        return new_long, self.shortest_edge

    def __call__(self, image: Image.Image) -> np.ndarray:
        """RGB image -> ``[3, H, W]`` float32."""
        image = image.convert("RGB")
        target = self._resize_target(*image.size)
        if target != image.size:
            image = image.resize(target, resample=self.resample)
        if self.crop is not None:
            crop_h, crop_w = self.crop
            # HF floors the offsets; PIL pads with black outside the image, as HF pads with 0
            left, top = (image.width - crop_w) // 2, (image.height - crop_h) // 2
            image = image.crop((left, top, left + crop_w, top + crop_h))
        # rescale in float64 then cast, like transformers' rescale(), so the outputs match exactly
        pixels = (np.asarray(image, dtype=np.float64) * (1 / 255)).astype(np.float32)
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return ((pixels - mean) / std).transpose(2, 0, 1)  # [H, W, 3] -> [3, H, W]

    def describe(self) -> dict[str, Any]:
        return {**asdict(self), "resample": Image.Resampling(self.resample).name.lower()}

    @classmethod
    def from_hf(cls, processor: Any) -> ImageTransform:
        """The transform a transformers image processor (PIL backend) applies.

        Supports ``size`` as ``{"shortest_edge"}`` or ``{"height", "width"}``, an optional center
        crop, and ConvNeXt's ``crop_pct`` (resize the shorter side to ``shortest_edge /
        crop_pct``, then crop ``shortest_edge``; from 384 px on, a plain square resize).
        """
        size = processor.size if getattr(processor, "do_resize", True) else None
        crop_pct = getattr(processor, "crop_pct", None)
        options: dict[str, Any] = {}
        if size is not None and size.shortest_edge and not size.longest_edge:
            edge = int(size.shortest_edge)
            if crop_pct is None:
                options["shortest_edge"] = edge
            elif edge < 384:
                options |= {"shortest_edge": int(edge / crop_pct), "crop": (edge, edge)}
            else:
                options["size"] = (edge, edge)
        elif size is not None and size.height and size.width:
            options["size"] = (int(size.height), int(size.width))
        elif size is not None:
            raise ConfigError(
                f"{type(processor).__name__}: unsupported resize {dict(size)}; lmmrec handles "
                "shortest_edge or height/width sizes"
            )
        crop_size = getattr(processor, "crop_size", None)
        if "crop" not in options and getattr(processor, "do_center_crop", False) and crop_size:
            options["crop"] = (int(crop_size.height), int(crop_size.width))
        if getattr(processor, "do_rescale", True) and processor.rescale_factor != 1 / 255:
            raise ConfigError(
                f"{type(processor).__name__}: rescale_factor {processor.rescale_factor} is not "
                "1/255, which lmmrec's image transform assumes"
            )
        if getattr(processor, "do_normalize", True):
            options["mean"] = tuple(float(m) for m in _three(processor.image_mean))
            options["std"] = tuple(float(s) for s in _three(processor.image_std))
        resample = getattr(processor, "resample", None)
        return cls(
            resample=int(Image.Resampling.BILINEAR if resample is None else resample), **options
        )


def _three(values: float | list[float] | tuple[float, ...]) -> tuple[float, ...]:
    return (values,) * 3 if isinstance(values, int | float) else tuple(values)


@dataclass(frozen=True)
class ImagePreprocessor:
    """Images -> ``pixel_values [B, 3, H, W]`` and ``image_present [B]``; missing -> zeros."""

    transform: ImageTransform

    def __call__(self, images: list[Image.Image | None]) -> dict[str, torch.Tensor]:
        height, width = self.transform.output_size
        pixels = np.zeros((len(images), 3, height, width), dtype=np.float32)
        present = np.zeros(len(images), dtype=bool)
        for row, image in enumerate(images):
            if image is not None:
                pixels[row] = self.transform(image)
                present[row] = True
        return {
            "pixel_values": torch.from_numpy(pixels),
            "image_present": torch.from_numpy(present),
        }

    def describe(self) -> dict[str, Any]:
        return self.transform.describe()


@dataclass(frozen=True)
class TextPreprocessor:
    """Texts -> token ids ``[B, L]``, truncated to ``max_length`` **tokens**.

    Attributes:
        tokenizer: a transformers tokenizer (picklable).
        max_length: most tokens per text, special tokens included.
        template: format string with ``{text}``, applied before tokenisation.
        padding: ``"longest"`` (pad to the batch's longest text) or ``"max_length"``.
        lowercase: lower-case texts first (for models trained that way whose tokenizer does not).
    """

    tokenizer: Any
    max_length: int
    template: str = "{text}"
    padding: Literal["longest", "max_length"] = "longest"
    lowercase: bool = False

    def __post_init__(self) -> None:
        if "{text}" not in self.template:
            raise ConfigError(f"text template {self.template!r} must contain '{{text}}'")
        if self.max_length < 2:
            raise ConfigError(f"max_length must be at least 2 tokens, got {self.max_length}")

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        prepared = [self.template.format(text=t) for t in texts]
        if self.lowercase:
            prepared = [t.lower() for t in prepared]
        encoded = self.tokenizer(
            prepared,
            padding=self.padding,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        present = torch.tensor([bool(t.strip()) for t in texts], dtype=torch.bool)
        return {k: v for k, v in encoded.items() if k in TEXT_KEYS} | {"text_present": present}

    def describe(self) -> dict[str, Any]:
        return {
            "tokenizer": type(self.tokenizer).__name__,
            "template": self.template,
            "truncation": {"unit": "tokens", "max_length": self.max_length},
            "padding": self.padding,
            "lowercase": self.lowercase,
        }


@dataclass(frozen=True)
class Preprocessor:
    """An encoder's whole preprocessing: :class:`ItemBatch` -> input tensors (module docstring).

    A modality is prepared when the encoder reads it (its part is set) and the batch carries it.
    """

    image: ImagePreprocessor | None = None
    text: TextPreprocessor | None = None

    def __call__(self, items: ItemBatch) -> dict[str, torch.Tensor]:
        inputs: dict[str, torch.Tensor] = {}
        if self.image is not None and items.images is not None:
            inputs |= self.image(items.images)
        if self.text is not None and items.texts is not None:
            inputs |= self.text(items.texts)
        return inputs

    @property
    def modalities(self) -> tuple[str, ...]:
        """The input modalities this preprocessor prepares."""
        return tuple(m for m in ("image", "text") if getattr(self, m) is not None)

    def describe(self) -> dict[str, Any]:
        return {m: getattr(self, m).describe() for m in self.modalities}
