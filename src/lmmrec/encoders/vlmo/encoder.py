"""VLMo (Bao et al., NeurIPS 2022, arXiv 2111.02358) as an item encoder, from official weights.

Spec: ``vlmo:/path/to/vlmo_base_plus_patch16_224.pt`` (any official ``.pt``/``.ckpt`` or a
``.safetensors`` with the official names; the architecture is read from the weights). The
BERT-uncased tokenizer comes from ``tokenizer=`` (a folder or ``vocab.txt``), by default the
checkpoint's folder. Outputs, each ``[B, D]`` (D = 544 for base_plus, 768 for base):

* ``image``: the image-only pass (V-FFN everywhere), ``itc_image_proj(LN(x)[:, 0])``,
  L2-normalised: the official retrieval embedding (``infer_image_ft``), which the paper's code
  stores as the item image feature (its §3; LMM4Rec ``build_embeds``);
* ``text``: likewise with the text-only pass (L-FFN) and ``itc_text_proj``;
* ``fused``: the L2-normalised mean of the two (:func:`~lmmrec.encoders.base.fuse`), cheap;
* ``vl`` (with ``vl=True``): the image-text pass (VL-FFN fusion), ``tanh(pooler(LN(x)[:, 0]))`` at
  the text [CLS], the vector VLMo's ITM head reads. It costs one more pass over
  ``Nt + Ni`` tokens per item, so it is off unless asked for.

Pre-processing as the official evaluation: square bicubic resize to the model's image size (no
crop), pixels to [-1, 1] (mean 0.5, std 0.5); text lower-cased WordPiece, ``[CLS] ... [SEP]``,
truncated and padded to ``max_text_len`` (40).

Trainable parts for the strategies of :mod:`lmmrec.encoders.base`: the one tower is the shared stack
of MoME blocks; its top is the final norm; the projections are ``itc_image_proj``,
``itc_text_proj`` and the ``pooler``. ``lora:R`` adapts the fused ``qkv`` projection of every
block (VLMo has no separate query/value projections, so the key projection is adapted too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import torch
from PIL import Image

from lmmrec.encoders.base import ItemEncoder, Layout, fuse
from lmmrec.encoders.preprocessing import (
    ImagePreprocessor,
    ImageTransform,
    Preprocessor,
    TextPreprocessor,
)
from lmmrec.encoders.registry import register
from lmmrec.encoders.vlmo.checkpoint import load_vlmo
from lmmrec.encoders.vlmo.tokenizer import load_bert_tokenizer
from lmmrec.errors import ConfigError

VLMO_MEAN = VLMO_STD = (0.5, 0.5, 0.5)  # official Normalize(0.5, 0.5): pixels in [-1, 1]
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json")


@register
class VLMoEncoder(ItemEncoder):
    """Image and text -> ``{"image", "text", "fused"}`` (+ ``"vl"``), each ``[B, D]``."""

    name = "vlmo"
    temperature_name = "model.logit_scale"  # VLMo's ITC temperature (the "itc" head)

    def __init__(
        self,
        checkpoint: str | Path,
        *,
        tokenizer: str | Path | None = None,
        image_size: int | None = None,
        vl: bool = False,
        pretraining_heads: bool = False,
    ) -> None:
        super().__init__()
        checkpoint = Path(checkpoint).expanduser()
        overrides: dict[str, Any] = {} if image_size is None else {"image_size": image_size}
        if not pretraining_heads:
            overrides["heads"] = ("itc",)
        self.model, _ = load_vlmo(checkpoint, **overrides)
        config = self.model.config
        if "itc" not in config.heads:
            raise ConfigError(f"{checkpoint} has no ITC projection heads; VLMoEncoder needs them")
        self.checkpoint = checkpoint
        self.vl = vl
        size = config.image_size
        transform = ImageTransform(
            size=(size, size), mean=VLMO_MEAN, std=VLMO_STD, resample=Image.Resampling.BICUBIC
        )
        self.preprocessor = Preprocessor(
            image=ImagePreprocessor(transform),
            text=TextPreprocessor(
                load_bert_tokenizer(_tokenizer_path(checkpoint, tokenizer)),
                max_length=config.max_text_len,
                padding="max_length",
            ),
        )

    @classmethod
    def from_spec(
        cls,
        arg: str | None,
        *,
        tokenizer: str | None = None,
        image_size: int | None = None,
        vl: bool = False,
        pretraining_heads: bool = False,
    ) -> VLMoEncoder:
        """``vlmo:/path/to/vlmo_base_patch16_224.pt``.

        Options: ``tokenizer`` (folder or vocab.txt; default: the checkpoint's folder),
        ``image_size`` (another input size; position tensors are resized), ``vl`` (also compute
        the fused ``vl`` output), ``pretraining_heads`` (keep the checkpoint's ITC-VL/ITM/MLM
        heads, for fine-tuning with VLMo's objectives). The checkpoint is read without unpickling
        anything but tensors (:func:`~.checkpoint.read_checkpoint`).
        """
        if not arg:
            raise ConfigError(
                "vlmo needs a checkpoint: vlmo:/path/to/vlmo_base_plus_patch16_224.pt (the "
                "official weights, downloaded by hand), with tokenizer=/path/to/bert-base-uncased"
            )
        return cls(
            arg,
            tokenizer=tokenizer,
            image_size=image_size,
            vl=vl,
            pretraining_heads=pretraining_heads,
        )

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``pixel_values`` ``[B, 3, S, S]`` and/or ``input_ids``/``attention_mask`` ``[B, Lt]``
        -> ``image`` / ``text`` ``[B, D]``; with both, ``fused`` (and ``vl``) ``[B, D]``."""
        out: dict[str, torch.Tensor] = {}
        pixels, ids = inputs.get("pixel_values"), inputs.get("input_ids")
        if pixels is not None:
            out["image"] = cast(torch.Tensor, self.model.forward_image(pixels).cls_feats)
        if ids is not None:
            mask = inputs["attention_mask"]
            out["text"] = cast(torch.Tensor, self.model.forward_text(ids, mask).cls_feats)
        if pixels is not None and ids is not None:
            out["fused"] = fuse(
                out["image"], out["text"], inputs["image_present"], inputs["text_present"]
            )
            if self.vl:
                fusion = self.model.forward_image_text(ids, inputs["attention_mask"], pixels)
                out["vl"] = fusion.cls_feats
        return out

    def output_dims(self) -> dict[str, int]:
        modalities = ("image", "text", "fused") + (("vl",) if self.vl else ())
        return dict.fromkeys(modalities, self.model.config.hidden_size)

    def layout(self) -> Layout:
        model = self.model
        return Layout(
            towers={"blocks": model.transformer.blocks},
            tops=[model.transformer.norm],
            projections=[model.itc_image_proj, model.itc_text_proj, model.pooler],
        )

    def _lora_targets(self, layout: Layout) -> list[str]:
        """Every block's fused ``qkv`` projection (q, k and v adapted together)."""
        return [
            f"model.transformer.blocks.{i}.attn.qkv"
            for i in range(len(self.model.transformer.blocks))
        ]

    def set_activation_checkpointing(self, enabled: bool) -> None:
        """Checkpoint every MoME block (``torch.utils.checkpoint``, non-reentrant) in training."""
        self.model.gradient_checkpointing = enabled

    def describe(self) -> dict[str, Any]:
        return super().describe() | {
            "checkpoint": str(self.checkpoint),
            "config": self.model.config.model_dump(mode="json"),
            "vl": self.vl,
        }


def _tokenizer_path(checkpoint: Path, tokenizer: str | Path | None) -> Path:
    """The tokenizer given, or the checkpoint's folder if it holds tokenizer files."""
    if tokenizer is not None:
        return Path(tokenizer).expanduser()
    if any((checkpoint.parent / name).is_file() for name in TOKENIZER_FILES):
        return checkpoint.parent
    raise ConfigError(
        f"no tokenizer for {checkpoint}: pass tokenizer=/path/to/bert-base-uncased (a folder with "
        f"vocab.txt, or the vocab.txt itself), or put vocab.txt next to the checkpoint"
    )
