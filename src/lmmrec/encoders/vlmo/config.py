"""VLMo hyper-parameters: one typed, frozen config and the official presets.

Bao, Wang, Dong, Liu, Mohammed, Aggarwal, Som, Piao, Wei. "VLMo: Unified Vision-Language
Pre-Training with Mixture-of-Modality-Experts." NeurIPS 2022 (arXiv 2111.02358). The presets
follow the model factories of the official code (``microsoft/unilm``, ``vlmo/``):
``vlmo_base_patch16`` (12 layers x 768, VL-FFN in the top 2 layers), ``vlmo_large_patch16``
(24 x 1024, top 3) and ``vlmo_base_plus_patch16`` (24 x 544, top 3, absolute positions, no
LayerScale). ``tiny`` and ``tiny_plus`` are the sizes of the two parity fixtures
(``shared/reference/vlmo-parity``).

Field names say what they do; the official name follows in brackets where it differs.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lmmrec.errors import ConfigError

Head = Literal["itc", "itc_vl", "itm", "mlm"]
"""Optional heads. ``itc``: ``itc_{image,text}_proj`` + ``logit_scale``; ``itc_vl``: the VL-FFN
branch projections ``itc_vl_{image,text}_proj`` + ``logit_vl_scale``; ``itm``: ``itm_score``;
``mlm``: ``mlm_score``. The ``pooler`` is always built (the fused item vector needs it)."""

ALL_HEADS: tuple[Head, ...] = ("itc", "itc_vl", "itm", "mlm")


class VLMoConfig(BaseModel):
    """Sizes and switches of a VLMo model. Defaults are ``vlmo_base_patch16`` at 224 px."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image_size: int = Field(224, gt=0, description="S, square input side in pixels [image_size]")
    patch_size: int = Field(16, gt=0, description="P, patch side; the grid is W = S / P per side")
    in_chans: int = Field(3, gt=0, description="input image channels")
    hidden_size: int = Field(768, gt=0, description="D, token width [embed_dim]")
    num_layers: int = Field(12, gt=0, description="L, MoME blocks [depth]")
    num_heads: int = Field(12, gt=0, description="H, attention heads; D must divide by H")
    mlp_ratio: float = Field(4.0, gt=0, description="FFN hidden width / D (every expert)")
    vlffn_start_layer_index: int = Field(
        10, ge=1, description="first block that also has a VL-FFN expert (blocks start..L-1)"
    )
    relative_position_bias: bool = Field(
        True,
        description="shared relative-position bias table [need_relative_position_embed]; when "
        "False the text embedding adds BERT absolute positions instead (base_plus)",
    )
    abs_pos_embed: bool = Field(
        False, description="learned absolute image position embedding [use_abs_pos_emb]"
    )
    layer_scale_init_values: float | None = Field(
        0.1, description="LayerScale init of gamma_1/gamma_2; None builds no gamma (base_plus)"
    )
    qkv_bias: bool = Field(True, description="BEiT q and v biases (no k bias)")
    vocab_size: int = Field(30522, gt=0, description="BERT-uncased WordPiece vocabulary")
    max_text_len: int = Field(40, gt=1, description="Lt, text tokens incl. [CLS] and [SEP]")
    max_text_len_of_initckpt: int = Field(
        196, gt=1, description="text length of the stage-2 checkpoint; sizes the bias table"
    )
    drop_path_rate: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="stochastic depth at the top block, linear from 0; also the text embedding "
        "dropout (the official BertConfig uses it as hidden_dropout_prob)",
    )
    heads: tuple[Head, ...] = Field(ALL_HEADS, description="optional heads to build")

    @model_validator(mode="after")
    def _consistent(self) -> VLMoConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} must be a multiple of num_heads {self.num_heads}"
            )
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}"
            )
        if self.vlffn_start_layer_index > self.num_layers:
            raise ValueError(
                f"vlffn_start_layer_index {self.vlffn_start_layer_index} exceeds num_layers "
                f"{self.num_layers}"
            )
        if "itc_vl" in self.heads and not self.has_vlffn:
            raise ValueError("head 'itc_vl' needs VL-FFN blocks (vlffn_start_layer_index < L)")
        if self.relative_position_bias and self.max_text_len > self.max_text_len_of_initckpt:
            raise ValueError(
                f"max_text_len {self.max_text_len} exceeds max_text_len_of_initckpt "
                f"{self.max_text_len_of_initckpt}: the bias table has no rows for such distances"
            )
        return self

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def grid_size(self) -> int:
        """W, patches per image side."""
        return self.image_size // self.patch_size

    @property
    def num_image_tokens(self) -> int:
        """Ni = W^2 patches + [CLS]."""
        return self.grid_size**2 + 1

    @property
    def ffn_hidden_size(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)

    @property
    def has_vlffn(self) -> bool:
        return self.vlffn_start_layer_index < self.num_layers

    @property
    def text_abs_positions(self) -> bool:
        """BERT absolute text positions are used exactly when there is no relative bias."""
        return not self.relative_position_bias

    @property
    def num_relative_distance(self) -> int:
        """Image rows of the bias table: (2W-1)^2 patch offsets + 3 [CLS] entries."""
        return (2 * self.grid_size - 1) ** 2 + 3

    @property
    def all_num_relative_distance(self) -> int:
        """All rows: image rows + text->image + image->text + 2 * Linit text rows."""
        return self.num_relative_distance + 2 * self.max_text_len_of_initckpt + 2

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> VLMoConfig:
        """A named preset (:data:`PRESETS`) with keyword overrides, e.g. ``image_size=384``."""
        if name not in PRESETS:
            raise ConfigError(f"unknown VLMo preset {name!r}; known: {', '.join(PRESETS)}")
        try:
            return cls(**{**PRESETS[name], **overrides})
        except ValidationError as error:
            raise ConfigError(f"invalid VLMo config (preset {name!r}): {error}") from error


PRESETS: dict[str, dict[str, Any]] = {
    "base": {},
    "large": {
        "hidden_size": 1024,
        "num_layers": 24,
        "num_heads": 16,
        "vlffn_start_layer_index": 21,
    },
    "base_plus": {
        "hidden_size": 544,
        "num_layers": 24,
        "num_heads": 16,
        "vlffn_start_layer_index": 21,
        "relative_position_bias": False,
        "abs_pos_embed": True,
        "layer_scale_init_values": None,
    },
    "tiny": {
        "image_size": 32,
        "patch_size": 8,
        "hidden_size": 64,
        "num_layers": 4,
        "num_heads": 4,
        "vlffn_start_layer_index": 2,
        "vocab_size": 100,
        "max_text_len": 16,
    },
}
PRESETS["tiny_plus"] = {
    **PRESETS["tiny"],
    "relative_position_bias": False,
    "abs_pos_embed": True,
    "layer_scale_init_values": None,
}
