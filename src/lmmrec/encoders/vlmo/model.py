"""VLMo: a transformer whose blocks share self-attention and switch modality-expert FFNs.

Bao et al. "VLMo: Unified Vision-Language Pre-Training with Mixture-of-Modality-Experts."
NeurIPS 2022 (arXiv 2111.02358), section "Mixture-of-Modality-Experts Transformer". A clean
re-implementation of the official ``microsoft/unilm`` ``vlmo/`` model that keeps its parameter
names, so official checkpoints load by name (``checkpoint.py``). Dimensions: B batch, N tokens,
Nt text tokens, Ni = W^2 + 1 image tokens, D width, H heads, Dh = D / H, L blocks, V vocabulary.

One MoME block, pre-LN with BEiT LayerScale ``gamma``::

    x = x + gamma_1 * MSA(LN(x))                       shared by every modality
    x = x + gamma_2 * FFN_m(LN_m(x))                    m = V (image), L (text) or VL

In "vl" mode the blocks below ``vlffn_start_layer_index`` send the text slice ``x[:, :Nt]`` through
the L-FFN and the image slice through the V-FFN; the blocks from there on use the VL-FFN on the
joint sequence. Attention logits get a per-layer bias from one shared relative-position table
(base, large) or the tokens carry absolute positions instead (base_plus).

Forward modes (official ``infer_image``, ``infer_text``, ``infer``):

* :meth:`VLMo.forward_image`: image tokens, V-FFN in every block; ``cls_feats`` =
  l2n(itc_image_proj(LN(x_L)[:, 0])), the image embedding of image-text contrast (ITC);
* :meth:`VLMo.forward_text`: text tokens, L-FFN in every block, likewise with ``itc_text_proj``;
* both optionally run the VL-FFN branch (blocks start..L-1 in "vl" mode from x_{start-1}) that the
  pre-training ITC also contrasts (``cls_vlffn_feats``);
* :meth:`VLMo.forward_image_text`: ``[text | image]`` fused; ``cls_feats`` =
  tanh(pooler(LN(x_L)[:, 0])) at the text [CLS], the input of the ITM head.

Text may be shorter than ``max_text_len`` (dynamic padding): padded keys are masked, so the real
tokens' outputs do not depend on how much padding follows them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from lmmrec.encoders.vlmo.config import VLMoConfig
from lmmrec.errors import ConfigError

Mode = Literal["image", "text", "vl"]
IMAGE_TOKEN_TYPE = 1
TEXT_TOKEN_TYPE = 0
TRANSFORMER_LN_EPS = 1e-6  # every norm inside the transformer
BERT_LN_EPS = 1e-12  # text embedding and MLM head norms (BertConfig.layer_norm_eps)


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples of a residual branch with probability p, rescale."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1.0 - p)
    return x * keep / (1.0 - p)


class Mlp(nn.Module):
    """One FFN expert: fc1 (D -> 4D), GELU (erf), fc2 (4D -> D)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention with BEiT q/v biases; ``qkv`` and ``proj`` are called as modules.

    Calling the projections as modules (not ``F.linear(x, self.qkv.weight)``, as the official code
    does) lets peft LoRA wrap them.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, rel_bias: torch.Tensor | None, padding: torch.Tensor | None
    ) -> torch.Tensor:
        """x (B, N, D) -> (B, N, D). Additive logit biases: ``rel_bias`` (1, H, N, N) relative
        positions, ``padding`` (B, 1, 1, N) -inf on padded keys; either may be None."""
        b, n, d = x.shape
        qkv = self.qkv(x)  # (B, N, 3D)
        if self.q_bias is not None and self.v_bias is not None:
            qkv = qkv + torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))
        q, k, v = qkv.view(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        if rel_bias is not None and padding is not None:
            bias = rel_bias + padding  # (B, H, N, N)
        else:
            bias = rel_bias if rel_bias is not None else padding
        # softmax(q k^T / sqrt(Dh) + bias) v, each (B, H, N, Dh)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=None if bias is None else bias.to(q.dtype)
        )
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """MoME block: shared attention, then the V-, L- or VL-FFN expert chosen by ``mode``."""

    def __init__(self, config: VLMoConfig, drop_path_rate: float, with_vlffn: bool) -> None:
        super().__init__()
        dim, hidden = config.hidden_size, config.ffn_hidden_size
        self.drop_path_rate = drop_path_rate
        self.norm1 = nn.LayerNorm(dim, eps=TRANSFORMER_LN_EPS)
        self.attn = Attention(dim, config.num_heads, config.qkv_bias)
        self.norm2_text = nn.LayerNorm(dim, eps=TRANSFORMER_LN_EPS)
        self.norm2_imag = nn.LayerNorm(dim, eps=TRANSFORMER_LN_EPS)
        self.mlp_text = Mlp(dim, hidden)
        self.mlp_imag = Mlp(dim, hidden)
        self.norm2_vl = nn.LayerNorm(dim, eps=TRANSFORMER_LN_EPS) if with_vlffn else None
        self.mlp_vl = Mlp(dim, hidden) if with_vlffn else None
        scale = config.layer_scale_init_values
        self.gamma_1 = nn.Parameter(torch.full((dim,), scale)) if scale is not None else None
        self.gamma_2 = nn.Parameter(torch.full((dim,), scale)) if scale is not None else None

    def _residual(self, branch: torch.Tensor, gamma: torch.Tensor | None) -> torch.Tensor:
        """DropPath(gamma * branch); gamma (D) is LayerScale, absent for base_plus."""
        if gamma is not None:
            branch = gamma * branch
        return drop_path(branch, self.drop_path_rate, self.training)

    def forward(
        self,
        x: torch.Tensor,
        rel_bias: torch.Tensor | None,
        padding: torch.Tensor | None,
        mode: Mode,
        n_text: int,
    ) -> torch.Tensor:
        """x (B, N, D) -> (B, N, D); biases as in :class:`Attention`. In "vl" mode the first
        ``n_text`` tokens are text."""
        x = x + self._residual(self.attn(self.norm1(x), rel_bias, padding), self.gamma_1)
        if mode == "image":
            return x + self._residual(self.mlp_imag(self.norm2_imag(x)), self.gamma_2)
        if mode == "text":
            return x + self._residual(self.mlp_text(self.norm2_text(x)), self.gamma_2)
        if self.mlp_vl is not None and self.norm2_vl is not None:
            return x + self._residual(self.mlp_vl(self.norm2_vl(x)), self.gamma_2)
        text, image = x[:, :n_text], x[:, n_text:]  # (B, Nt, D), (B, Ni, D)
        text = text + self._residual(self.mlp_text(self.norm2_text(text)), self.gamma_2)
        image = image + self._residual(self.mlp_imag(self.norm2_imag(image)), self.gamma_2)
        return torch.cat([text, image], dim=1)


class PatchEmbed(nn.Module):
    """Non-overlapping P x P patches projected to D by a strided Conv2d."""

    def __init__(self, config: VLMoConfig) -> None:
        super().__init__()
        self.image_size = config.image_size
        self.proj = nn.Conv2d(
            config.in_chans, config.hidden_size, config.patch_size, stride=config.patch_size
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image (B, 3, S, S) -> patch tokens (B, W^2, D), row-major over the grid."""
        if image.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"image size {tuple(image.shape[-2:])} does not match the model's "
                f"{self.image_size}x{self.image_size}; resize it or build the config for that size"
            )
        return self.proj(image).flatten(2).transpose(1, 2)


class MultiwayTransformer(nn.Module):
    """The backbone: patch embedding, [CLS], optional absolute positions, blocks, final norm."""

    def __init__(self, config: VLMoConfig) -> None:
        super().__init__()
        dim = config.hidden_size
        self.patch_embed = PatchEmbed(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = (
            nn.Parameter(torch.zeros(1, config.num_image_tokens, dim))
            if config.abs_pos_embed
            else None
        )
        rates = torch.linspace(0, config.drop_path_rate, config.num_layers).tolist()
        self.blocks = nn.ModuleList(
            Block(config, rate, with_vlffn=i >= config.vlffn_start_layer_index)
            for i, rate in enumerate(rates)
        )
        self.norm = nn.LayerNorm(dim, eps=TRANSFORMER_LN_EPS)

    def visual_embed(self, image: torch.Tensor) -> torch.Tensor:
        """image (B, 3, S, S) -> [CLS | patches] (+ pos_embed) (B, Ni, D)."""
        patches = self.patch_embed(image)  # (B, W^2, D)
        x = torch.cat([self.cls_token.expand(patches.shape[0], -1, -1), patches], dim=1)
        return x if self.pos_embed is None else x + self.pos_embed


class TextEmbeddings(nn.Module):
    """BERT embeddings: LN(word + BERT token type 0 [+ absolute position]), then dropout.

    Base and large use relative positions, so no absolute text position is added (the official
    BertEmbeddings with ``position_embedding_type="rel_pos"``); base_plus adds positions 0..Nt-1
    before the LayerNorm.
    """

    def __init__(self, config: VLMoConfig) -> None:
        super().__init__()
        dim = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, dim, padding_idx=0)
        self.position_embeddings = (
            nn.Embedding(config.max_text_len, dim) if config.text_abs_positions else None
        )
        self.token_type_embeddings = nn.Embedding(2, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=BERT_LN_EPS)
        self.dropout = nn.Dropout(config.drop_path_rate)

    def forward(self, text_ids: torch.Tensor) -> torch.Tensor:
        """text_ids (B, Nt) -> (B, Nt, D)."""
        x = self.word_embeddings(text_ids) + self.token_type_embeddings.weight[0]
        if self.position_embeddings is not None:
            x = x + self.position_embeddings.weight[: text_ids.shape[1]]
        return self.dropout(self.LayerNorm(x))


class Pooler(nn.Module):
    """tanh(dense(x[:, 0])): (B, N, D) -> (B, D)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(x[:, 0]))


class ITCHead(nn.Module):
    """Bias-free linear projection into the contrastive space: (B, D) -> (B, D)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class ITMHead(nn.Module):
    """Matched / not matched logits from the pooled fusion vector: (B, D) -> (B, 2)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class PredictionHeadTransform(nn.Module):
    """BERT's MLM transform: dense, GELU, LayerNorm (eps 1e-12)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.act = nn.GELU()
        self.LayerNorm = nn.LayerNorm(dim, eps=BERT_LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.act(self.dense(x)))


class MLMHead(nn.Module):
    """Masked-token logits (..., D) -> (..., V): transform, untied decoder, separate bias."""

    def __init__(self, dim: int, vocab_size: int) -> None:
        super().__init__()
        self.transform = PredictionHeadTransform(dim)
        self.decoder = nn.Linear(dim, vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(x)) + self.bias


def image_relative_position_index(config: VLMoConfig) -> torch.Tensor:
    """(Ni, Ni) table rows for image attention, query i (row) to key j (column).

    Patches at (h, w) use ``(h_i - h_j + W - 1) * (2W - 1) + (w_i - w_j + W - 1)``; the [CLS] query
    row, [CLS] key column and [CLS]-[CLS] cell use the three rows after the (2W-1)^2 offsets.
    """
    w, nrd = config.grid_size, config.num_relative_distance
    h_pos, w_pos = torch.arange(w * w).div(w, rounding_mode="floor"), torch.arange(w * w) % w
    dh = h_pos[:, None] - h_pos[None, :] + w - 1  # (W^2, W^2)
    dw = w_pos[:, None] - w_pos[None, :] + w - 1
    index = torch.empty(w * w + 1, w * w + 1, dtype=torch.long)
    index[1:, 1:] = dh * (2 * w - 1) + dw
    index[0, :] = nrd - 3
    index[:, 0] = nrd - 2
    index[0, 0] = nrd - 1
    return index


def text_relative_position_index(config: VLMoConfig) -> torch.Tensor:
    """(Lt, Lt) table rows for text attention: tokens p, q >= 1 use row ``nrd + Linit + (q - p)``.

    The text [CLS] row, column and cell use the last three rows of the table.
    """
    n, nrd, total = (
        config.max_text_len,
        config.num_relative_distance,
        config.all_num_relative_distance,
    )
    pos = torch.arange(n - 1)
    index = torch.empty(n, n, dtype=torch.long)
    index[1:, 1:] = pos[None, :] - pos[:, None] + config.max_text_len_of_initckpt + nrd
    index[0, :] = total - 3
    index[:, 0] = total - 2
    index[0, 0] = total - 1
    return index


def image_text_relative_position_index(config: VLMoConfig) -> torch.Tensor:
    """(Lt + Ni, Lt + Ni) rows for ``[text | image]``: the two blocks above, with one shared row
    for every text->image pair (``nrd``) and one for every image->text pair (``nrd + 1``)."""
    nrd = config.num_relative_distance
    text, image = text_relative_position_index(config), image_relative_position_index(config)
    text_to_image = torch.full((text.shape[0], image.shape[1]), nrd, dtype=torch.long)
    image_to_text = torch.full((image.shape[0], text.shape[1]), nrd + 1, dtype=torch.long)
    return torch.cat([torch.cat([text, text_to_image], 1), torch.cat([image_to_text, image], 1)])


@dataclass(frozen=True)
class UnimodalOutput:
    """One image-only or text-only pass (official ``infer_image`` / ``infer_text``).

    Attributes:
        embeds: (B, N, D) input of block 0 (embeddings + modality type).
        hidden_states: L tensors (B, N, D), the output of each block (with
            ``output_hidden_states``; else empty).
        feats: (B, N, D) ``norm(x_L)``.
        raw_cls_feats: (B, D) ``x_L[:, 0]`` *before* the final norm, as the official code returns.
        cls_feats: (B, D) L2-normalised ITC embedding; None without the ``itc`` head.
        vlffn_hidden_states: outputs of blocks start..L-1 in "vl" mode (VL-FFN branch), if run
            with ``output_hidden_states``.
        cls_vlffn_feats: (B, D) L2-normalised ITC embedding of that branch, if run.
    """

    embeds: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...]
    feats: torch.Tensor
    raw_cls_feats: torch.Tensor
    cls_feats: torch.Tensor | None
    vlffn_hidden_states: tuple[torch.Tensor, ...] = ()
    cls_vlffn_feats: torch.Tensor | None = None


@dataclass(frozen=True)
class FusionOutput:
    """One image-text pass (official ``infer``).

    Attributes:
        embeds: (B, Nt + Ni, D) ``[text | image]`` input of block 0.
        hidden_states: L tensors (B, Nt + Ni, D) with ``output_hidden_states``, else empty.
        text_feats: (B, Nt, D) and image_feats: (B, Ni, D), the two slices of ``norm(x_L)``.
        raw_cls_feats: (B, D) ``norm(x_L)[:, 0]`` (after the norm, unlike the unimodal passes).
        cls_feats: (B, D) ``pooler(norm(x_L))``, the fused vector at the text [CLS].
    """

    embeds: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...]
    text_feats: torch.Tensor
    image_feats: torch.Tensor
    raw_cls_feats: torch.Tensor
    cls_feats: torch.Tensor


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """x / ||x|| over the last dimension (no epsilon, as the official code)."""
    return x / x.norm(dim=-1, keepdim=True)


class VLMo(nn.Module):
    """VLMo with the official module names (``transformer.blocks.{i}.mlp_imag.fc1`` ...).

    ``forward`` dispatches on its inputs (image -> image pass, text -> text pass, both -> fusion),
    so wrappers that only call ``forward`` (DDP) work; the named methods are the same passes.
    """

    relative_position_index: torch.Tensor
    text_relative_position_index: torch.Tensor
    text_imag_relative_position_index: torch.Tensor

    def __init__(self, config: VLMoConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.hidden_size
        self.gradient_checkpointing = False
        self.transformer = MultiwayTransformer(config)
        if config.relative_position_bias:
            # (R, L * H): layer i reads columns [i * H, (i + 1) * H)
            self.relative_position_bias_table = nn.Parameter(
                torch.zeros(config.all_num_relative_distance, config.num_heads * config.num_layers)
            )
            for name, index in (
                ("relative_position_index", image_relative_position_index(config)),
                ("text_relative_position_index", text_relative_position_index(config)),
                ("text_imag_relative_position_index", image_text_relative_position_index(config)),
            ):
                self.register_buffer(name, index, persistent=False)
        self.text_embeddings = TextEmbeddings(config)
        self.token_type_embeddings = nn.Embedding(2, dim)
        self.pooler = Pooler(dim)
        if "itc" in config.heads:
            self.itc_text_proj = ITCHead(dim)
            self.itc_image_proj = ITCHead(dim)
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        if "itc_vl" in config.heads:
            self.itc_vl_text_proj = ITCHead(dim)
            self.itc_vl_image_proj = ITCHead(dim)
            self.logit_vl_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        if "itm" in config.heads:
            self.itm_score = ITMHead(dim)
        if "mlm" in config.heads:
            self.mlm_score = MLMHead(dim, config.vocab_size)
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        """Official init: truncated normal (0.02) in the transformer, normal (0.02) elsewhere,
        LayerNorm (1, 0), zero biases; the patch Conv2d keeps PyTorch's default."""
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                if name.startswith("transformer."):
                    nn.init.trunc_normal_(module.weight, std=0.02)
                else:
                    nn.init.normal_(module.weight, std=0.02)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.transformer.cls_token, std=0.02)
        if self.transformer.pos_embed is not None:
            nn.init.trunc_normal_(self.transformer.pos_embed, std=0.02)

    def _relative_biases(self, index: torch.Tensor | None) -> torch.Tensor | None:
        """(L, 1, H, N, N) per-block relative-position biases for the table index ``index``
        (N, N); block i reads table columns [i * H, (i + 1) * H)."""
        if index is None:
            return None
        cfg, n = self.config, index.shape[0]
        table = self.relative_position_bias_table[index]  # (N, N, L * H)
        return table.permute(2, 0, 1).reshape(cfg.num_layers, 1, cfg.num_heads, n, n)

    @staticmethod
    def _key_padding(key_mask: torch.Tensor | None) -> torch.Tensor | None:
        """key_mask (B, N), 1 on real tokens -> (B, 1, 1, N) additive: 0, or -inf on padding."""
        if key_mask is None:
            return None
        padding = torch.zeros(key_mask.shape, device=key_mask.device)
        return padding.masked_fill(~key_mask.bool(), float("-inf"))[:, None, None, :]

    def _relative_index(self, mode: Mode, n_text: int) -> torch.Tensor | None:
        """The bias-table index for this mode and a text length ``n_text`` <= Lt."""
        if not self.config.relative_position_bias:
            return None
        if mode == "image":
            return self.relative_position_index
        if mode == "text":
            return self.text_relative_position_index[:n_text, :n_text]
        max_text = self.config.max_text_len
        if n_text == max_text:
            return self.text_imag_relative_position_index
        keep = torch.cat(
            [
                torch.arange(n_text),
                torch.arange(max_text, max_text + self.config.num_image_tokens),
            ]
        ).to(self.text_imag_relative_position_index.device)
        return self.text_imag_relative_position_index[keep][:, keep]

    def _run_blocks(
        self,
        x: torch.Tensor,
        rel_biases: torch.Tensor | None,
        padding: torch.Tensor | None,
        mode: Mode,
        n_text: int,
        layers: range,
        states: list[torch.Tensor] | None,
    ) -> torch.Tensor:
        """Run blocks ``layers`` on x (B, N, D) -> (B, N, D); append each output to ``states``.

        ``rel_biases`` (L, 1, H, N, N) and ``padding`` (B, 1, 1, N) are summed inside each block:
        gradient checkpointing then keeps only these small inputs, not a (B, H, N, N) sum.
        """
        for i in layers:
            block = self.transformer.blocks[i]
            rel_bias = None if rel_biases is None else rel_biases[i]
            if self.gradient_checkpointing and self.training:
                x = checkpoint(block, x, rel_bias, padding, mode, n_text, use_reentrant=False)
            else:
                x = block(x, rel_bias, padding, mode, n_text)
            if states is not None:
                states.append(x)
        return x

    def embed_image(self, image: torch.Tensor) -> torch.Tensor:
        """image (B, 3, S, S) in [-1, 1] -> (B, Ni, D) tokens + image modality type."""
        return (
            self.transformer.visual_embed(image)
            + self.token_type_embeddings.weight[IMAGE_TOKEN_TYPE]
        )

    def embed_text(self, text_ids: torch.Tensor) -> torch.Tensor:
        """text_ids (B, Nt) -> (B, Nt, D) tokens + text modality type."""
        if text_ids.shape[1] > self.config.max_text_len:
            raise ValueError(
                f"text has {text_ids.shape[1]} tokens, more than max_text_len "
                f"{self.config.max_text_len}; truncate it in the tokenizer"
            )
        return self.text_embeddings(text_ids) + self.token_type_embeddings.weight[TEXT_TOKEN_TYPE]

    def _unimodal(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor | None,
        mode: Literal["image", "text"],
        vl_branch: bool,
        output_hidden_states: bool,
    ) -> UnimodalOutput:
        """Shared body of the image-only and text-only passes; x (B, N, D) embeddings.

        Blocks 0..start-1 run once; from their output x_{start-1}, blocks start..L-1 run in
        ``mode`` (the unimodal result) and, for the VL-FFN branch, again in "vl" mode.
        """
        cfg, n = self.config, x.shape[1]
        rel_biases = self._relative_biases(self._relative_index(mode, n))
        padding = self._key_padding(key_mask)
        bottom, top = (
            range(cfg.vlffn_start_layer_index),
            range(cfg.vlffn_start_layer_index, cfg.num_layers),
        )
        states: list[torch.Tensor] | None = [] if output_hidden_states else None
        middle = self._run_blocks(x, rel_biases, padding, mode, n, bottom, states)
        last = self._run_blocks(middle, rel_biases, padding, mode, n, top, states)
        feats = self.transformer.norm(last)  # (B, N, D)
        cls_feats = None
        if "itc" in cfg.heads:
            cls_feats = l2_normalize(getattr(self, f"itc_{mode}_proj")(feats[:, 0]))
        vl_states: list[torch.Tensor] | None = [] if output_hidden_states else None
        cls_vlffn_feats = None
        if vl_branch:
            if "itc_vl" not in cfg.heads:
                raise ConfigError("the VL-FFN branch needs the 'itc_vl' head in config.heads")
            vl_last = self._run_blocks(middle, rel_biases, padding, "vl", n, top, vl_states)
            vl_cls = self.transformer.norm(vl_last)[:, 0]  # (B, D)
            cls_vlffn_feats = l2_normalize(getattr(self, f"itc_vl_{mode}_proj")(vl_cls))
        return UnimodalOutput(
            embeds=x,
            hidden_states=tuple(states or ()),
            feats=feats,
            raw_cls_feats=last[:, 0],
            cls_feats=cls_feats,
            vlffn_hidden_states=tuple(vl_states or ()),
            cls_vlffn_feats=cls_vlffn_feats,
        )

    def forward_image(
        self, image: torch.Tensor, *, vl_branch: bool = False, output_hidden_states: bool = False
    ) -> UnimodalOutput:
        """Image-only pass (V-FFN in every block). image (B, 3, S, S) normalised to [-1, 1]."""
        x = self.embed_image(image)
        return self._unimodal(x, None, "image", vl_branch, output_hidden_states)

    def forward_text(
        self,
        text_ids: torch.Tensor,
        text_mask: torch.Tensor,
        *,
        vl_branch: bool = False,
        output_hidden_states: bool = False,
    ) -> UnimodalOutput:
        """Text-only pass (L-FFN in every block). text_ids, text_mask (B, Nt); mask 1 = token."""
        x = self.embed_text(text_ids)
        return self._unimodal(x, text_mask, "text", vl_branch, output_hidden_states)

    def forward_image_text(
        self,
        text_ids: torch.Tensor,
        text_mask: torch.Tensor,
        image: torch.Tensor,
        *,
        output_hidden_states: bool = False,
    ) -> FusionOutput:
        """Fusion pass over ``[text | image]``: split L-/V-FFN below the VL-FFN layers, VL-FFN
        above. text_ids, text_mask (B, Nt); image (B, 3, S, S)."""
        text, image_tokens = self.embed_text(text_ids), self.embed_image(image)
        n_text = text.shape[1]
        x = torch.cat([text, image_tokens], dim=1)  # (B, Nt + Ni, D)
        key_mask = torch.cat([text_mask, text_mask.new_ones(image_tokens.shape[:2])], dim=1)
        rel_biases = self._relative_biases(self._relative_index("vl", n_text))
        padding = self._key_padding(key_mask)
        states: list[torch.Tensor] | None = [] if output_hidden_states else None
        layers = range(self.config.num_layers)
        last = self._run_blocks(x, rel_biases, padding, "vl", n_text, layers, states)
        feats = self.transformer.norm(last)  # (B, Nt + Ni, D)
        return FusionOutput(
            embeds=x,
            hidden_states=tuple(states or ()),
            text_feats=feats[:, :n_text],
            image_feats=feats[:, n_text:],
            raw_cls_feats=feats[:, 0],
            cls_feats=self.pooler(feats),
        )

    def forward(
        self,
        image: torch.Tensor | None = None,
        text_ids: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        *,
        vl_branch: bool = False,
        output_hidden_states: bool = False,
    ) -> UnimodalOutput | FusionOutput:
        """Image, text or fused pass depending on which inputs are given (see the methods)."""
        if (text_ids is None) != (text_mask is None):
            raise ValueError("pass text_ids and text_mask together")
        keep = output_hidden_states
        if text_ids is not None and text_mask is not None:
            if image is not None:
                return self.forward_image_text(
                    text_ids, text_mask, image, output_hidden_states=keep
                )
            return self.forward_text(
                text_ids, text_mask, vl_branch=vl_branch, output_hidden_states=keep
            )
        if image is not None:
            return self.forward_image(image, vl_branch=vl_branch, output_hidden_states=keep)
        raise ValueError("pass an image, a text (text_ids + text_mask) or both")
