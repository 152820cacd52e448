"""Load official VLMo checkpoints (``vlmo_base_patch16_224.pt`` ...) by parameter name.

The released files are ``torch.load``-able dicts holding the model's state dict under
``"state_dict"`` (Lightning), ``"module"`` (DeepSpeed, keys prefixed ``module.``) or ``"model"``, or
being the state dict itself; ``.safetensors`` files hold it flat. :class:`~.model.VLMo` keeps the
official names, so loading is a name-for-name copy after these adaptations (as the official
``load_pretrained_weight`` does):

* drop ``*relative_position_index`` and ``text_embeddings.position_ids`` (rebuilt, never loaded)
  and, for relative-position models, the unused BERT text position table;
* keep the first ``max_text_len`` rows of the text position table (base_plus);
* resize ``relative_position_bias_table`` to another image size: the (2W-1)^2 patch-offset block
  is interpolated per column with a bicubic spline on geometrically spaced source offsets (BEiT's
  scheme, which the official loader runs through the removed ``scipy.interpolate.interp2d``); the
  [CLS], cross-modal and text rows are kept;
* resize the base_plus ``pos_embed`` bicubically (``align_corners=False``), [CLS] row kept.

Then every parameter the model has must be in the checkpoint, except heads the caller allows to stay
at their initialisation, and the checkpoint may only hold extra *head* weights (``vqa_classifier``,
an MLM head the model was built without ...). Anything else is a :class:`~lmmrec.errors.ConfigError`
that names the keys.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from scipy.interpolate import RectBivariateSpline
from scipy.optimize import brentq

from lmmrec.encoders.vlmo.config import ALL_HEADS, PRESETS, VLMoConfig
from lmmrec.encoders.vlmo.model import VLMo
from lmmrec.errors import ConfigError

ANCHOR = "transformer.cls_token"  # present in every VLMo state dict, used to find a key prefix
WRAPPER_KEYS = ("state_dict", "module", "model")  # the official loader's order
HEAD_PREFIXES: dict[str, tuple[str, ...]] = {
    "itc": ("itc_text_proj", "itc_image_proj", "logit_scale"),
    "itc_vl": ("itc_vl_text_proj", "itc_vl_image_proj", "logit_vl_scale"),
    "itm": ("itm_score",),
    "mlm": ("mlm_score",),
    "pooler": ("pooler",),
    "vqa": ("vqa_classifier",),
    "nlvr2": ("nlvr2_classifier",),
}
"""Head name -> top-level module names. ``pooler`` is a head here although it is always built."""
HEAD_MARKERS = {
    "itc": "itc_image_proj.fc.weight",
    "itc_vl": "itc_vl_image_proj.fc.weight",
    "itm": "itm_score.fc.weight",
    "mlm": "mlm_score.decoder.weight",
}
"""A key whose presence shows that a checkpoint holds a head of :data:`~.config.Head`."""
SHOWN_KEYS = 8  # keys listed in an error message
DEFAULT_MAX_TEXT_LEN = VLMoConfig.model_fields["max_text_len"].default
MAX_RATIO = 2.0  # largest gap ratio of the geometric offsets when resizing the bias table


@dataclass(frozen=True)
class LoadReport:
    """What a successful load left out: allowed missing head keys, unused checkpoint head keys."""

    missing: tuple[str, ...]
    unexpected: tuple[str, ...]


def head_of(key: str) -> str | None:
    """The head a parameter name belongs to, or None for backbone parameters."""
    top = key.split(".", 1)[0]
    return next((head for head, names in HEAD_PREFIXES.items() if top in names), None)


def _listing(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    more = f" ... ({len(keys) - SHOWN_KEYS} more)" if len(keys) > SHOWN_KEYS else ""
    return ", ".join(keys[:SHOWN_KEYS]) + more


class _Inert:
    """Stands in for any object of a checkpoint that is not a tensor or a plain container (a
    Lightning checkpoint's hyper-parameters, callback states): built from nothing, it keeps
    nothing, and no code of the class it replaces is imported or run."""

    def __init__(self, *_: Any, **__: Any) -> None:
        pass

    def __setstate__(self, _: Any) -> None:
        pass


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The flat VLMo state dict of a ``.pt``/``.ckpt``/``.safetensors`` file, prefix stripped.

    Nothing is unpickled beyond tensors and plain containers: ``torch.load(weights_only=True)``,
    with every other class the file names replaced by an inert stand-in (:class:`_Inert`; the
    official checkpoints carry such objects beside their weights). Names from modules that
    ``torch`` blocks outright (``os``, ``subprocess``, ``builtins.eval``, ...) are refused.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"VLMo checkpoint not found: {path} (give the path of a local file)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        raw: Any = load_file(path)
    else:
        try:  # a file of torch's legacy format cannot be scanned: plain tensors only, then
            names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except (ValueError, RuntimeError):
            names = []
        try:
            with torch.serialization.safe_globals([(_Inert, name) for name in names]):
                raw = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, KeyError) as error:
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            # torch's refusal is many lines: the one that names the offending global says it
            worded = lines and not isinstance(error, (EOFError, KeyError))
            last = lines[-1] if worded else "the file is damaged or not a torch checkpoint"
            reason = next((line for line in lines if "GLOBAL" in line), last)
            raise ConfigError(
                f"cannot read VLMo checkpoint {path}: {reason}; give the official .pt/.ckpt "
                "file or its weights as .safetensors"
            ) from None
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path} holds a {type(raw).__name__}, not a state dict")
    for key in WRAPPER_KEYS:
        if isinstance(raw.get(key), Mapping):
            raw = raw[key]
            break
    tensors = {k: v for k, v in raw.items() if isinstance(v, torch.Tensor)}
    anchor = next((k for k in tensors if k.endswith(ANCHOR)), None)
    if anchor is None:
        raise ConfigError(
            f"{path} is not a VLMo checkpoint: no '{ANCHOR}' among its {len(tensors)} tensors "
            "(stage-2 BEiT-named text checkpoints are not supported)"
        )
    prefix = anchor[: -len(ANCHOR)]
    return {k.removeprefix(prefix): v for k, v in tensors.items()}


def _blocks(state_dict: Mapping[str, torch.Tensor], part: str) -> list[int]:
    """Indices i of the keys ``transformer.blocks.{i}.{part}...``."""
    found = set()
    for key in state_dict:
        head, _, rest = key.partition("transformer.blocks.")
        index, _, tail = rest.partition(".")
        if not head and index.isdigit() and tail.startswith(part):
            found.add(int(index))
    return sorted(found)


def config_from_state_dict(state_dict: Mapping[str, torch.Tensor], **overrides: Any) -> VLMoConfig:
    """The :class:`VLMoConfig` a state dict was saved from; ``overrides`` win.

    Sizes come from the tensor shapes. The image size comes from the bias table (assuming the
    official ``max_text_len_of_initckpt`` of 196 unless overridden) or from ``pos_embed``; the text
    length from the (saved, even if unused) text position table, capped at 40. Without a
    bias table the head count cannot be read from the weights and is taken from the preset of the
    same width and depth (base_plus). The heads built are those the checkpoint holds.
    """
    try:
        return _config_from_state_dict(state_dict, overrides)
    except KeyError as error:
        raise ConfigError(f"the VLMo checkpoint lacks {error}; is it a full model?") from error


def _config_from_state_dict(
    sd: Mapping[str, torch.Tensor], overrides: dict[str, Any]
) -> VLMoConfig:
    dim = sd[ANCHOR].shape[-1]
    depth = len(_blocks(sd, "norm1"))
    vl_blocks = _blocks(sd, "mlp_vl")
    patch = sd["transformer.patch_embed.proj.weight"]
    found: dict[str, Any] = {
        "hidden_size": dim,
        "num_layers": depth,
        "vlffn_start_layer_index": vl_blocks[0] if vl_blocks else depth,
        "patch_size": patch.shape[-1],
        "in_chans": patch.shape[1],
        "mlp_ratio": sd["transformer.blocks.0.mlp_imag.fc1.weight"].shape[0] / dim,
        "qkv_bias": "transformer.blocks.0.attn.q_bias" in sd,
        "vocab_size": sd["text_embeddings.word_embeddings.weight"].shape[0],
        "relative_position_bias": "relative_position_bias_table" in sd,
        "abs_pos_embed": "transformer.pos_embed" in sd,
        "layer_scale_init_values": 0.1 if "transformer.blocks.0.gamma_1" in sd else None,
        "heads": tuple(head for head in ALL_HEADS if HEAD_MARKERS[head] in sd),
    }
    text_positions = sd.get("text_embeddings.position_embeddings.weight")
    if text_positions is not None:  # saved with max_text_len rows (196 for text-only stage 2)
        found["max_text_len"] = min(text_positions.shape[0], DEFAULT_MAX_TEXT_LEN)
    settings = {**found, **overrides}
    if found["relative_position_bias"]:
        rows, columns = sd["relative_position_bias_table"].shape
        found["num_heads"] = columns // depth
        init_len = settings.get("max_text_len_of_initckpt", 196)
        side = math.isqrt(max(rows - 2 * init_len - 5, 0))
        if side**2 != rows - 2 * init_len - 5 or side % 2 == 0:
            raise ConfigError(
                f"relative_position_bias_table has {rows} rows, which fits no image size with "
                f"max_text_len_of_initckpt={init_len}; pass image_size and that length explicitly"
            )
        found["image_size"] = (side + 1) // 2 * found["patch_size"]
    elif "num_heads" not in overrides:
        presets = [VLMoConfig.preset(name) for name in PRESETS]
        same_size = [c.num_heads for c in presets if (c.hidden_size, c.num_layers) == (dim, depth)]
        if not same_size:
            raise ConfigError(
                f"cannot tell the head count of a {depth} x {dim} VLMo without a bias table; "
                "pass num_heads explicitly"
            )
        found["num_heads"] = same_size[0]
    if found["abs_pos_embed"]:
        grid = math.isqrt(sd["transformer.pos_embed"].shape[1] - 1)
        found["image_size"] = grid * found["patch_size"]
    try:
        return VLMoConfig(**{**found, **overrides})
    except ValidationError as error:
        raise ConfigError(f"invalid VLMo config for this checkpoint: {error}") from error


def geometric_offsets(source: int, target: int) -> np.ndarray:
    """Positions of ``source`` (odd) offsets spread over [-(target // 2), target // 2].

    Gaps grow as 1, q, q^2, ... from the centre, with q such that the outermost offset lands on
    ``target // 2`` (BEiT's relative-bias resizing), so small offsets keep unit spacing.
    """
    n, half = source // 2, target // 2

    def reach(q: float) -> float:
        return float(sum(q**j for j in range(n))) - half

    if n < 2 or reach(MAX_RATIO) < 0:  # no geometric spread reaches that far: spread evenly
        return np.linspace(-half, half, source)
    q = 1.0 if n == half else brentq(reach, 1e-6, MAX_RATIO, xtol=1e-12)
    distances = np.cumsum([q**j for j in range(n)])
    return np.concatenate([-distances[::-1], [0.0], distances])


def resize_relative_position_table(table: torch.Tensor, config: VLMoConfig) -> torch.Tensor:
    """(R_src, L * H) table -> (R, L * H) for ``config``'s image size.

    The leading (2W'-1)^2 rows (patch offsets) are resampled to (2W-1)^2; the trailing
    ``R - (2W-1)^2`` rows ([CLS], cross-modal, text) are copied unchanged.
    """
    target = 2 * config.grid_size - 1
    extra = config.all_num_relative_distance - target**2
    source = math.isqrt(table.shape[0] - extra)
    if source**2 != table.shape[0] - extra:
        raise ConfigError(
            f"relative_position_bias_table has {table.shape[0]} rows; with {extra} non-patch rows "
            f"(max_text_len_of_initckpt={config.max_text_len_of_initckpt}) that is no square grid"
        )
    if source == target:
        return table
    src_pos = geometric_offsets(source, target)
    dst_pos = np.arange(-(target // 2), target // 2 + 1, dtype=np.float64)
    grid = table[:-extra].double().numpy().reshape(source, source, -1)  # (2W'-1, 2W'-1, L*H)
    k = min(3, source - 1)  # bicubic, or lower for a grid too small to carry a cubic
    columns = [
        RectBivariateSpline(src_pos, src_pos, grid[:, :, c], kx=k, ky=k, s=0)(dst_pos, dst_pos)
        for c in range(grid.shape[-1])
    ]
    resized = torch.from_numpy(np.stack(columns, axis=-1).reshape(target**2, -1))
    return torch.cat([resized.to(table.dtype), table[-extra:]])


def resize_pos_embed(pos_embed: torch.Tensor, config: VLMoConfig) -> torch.Tensor:
    """(1, 1 + s^2, D) -> (1, Ni, D): the patch rows bicubically resized to W x W, [CLS] kept."""
    source, target = math.isqrt(pos_embed.shape[1] - 1), config.grid_size
    if source == target:
        return pos_embed
    cls, grid = pos_embed[:, :1], pos_embed[:, 1:]
    grid = grid.reshape(1, source, source, -1).permute(0, 3, 1, 2)  # (1, D, s, s)
    grid = F.interpolate(grid.float(), size=(target, target), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, target * target, -1).to(pos_embed.dtype)
    return torch.cat([cls, grid], dim=1)


def adapt_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: VLMoConfig
) -> dict[str, torch.Tensor]:
    """Drop rebuilt or unused entries and resize position tensors to ``config`` (module doc)."""
    sd = {
        k: v
        for k, v in state_dict.items()
        if not k.endswith("relative_position_index") and k != "text_embeddings.position_ids"
    }
    text_positions = "text_embeddings.position_embeddings.weight"
    if text_positions in sd:
        if not config.text_abs_positions:
            del sd[text_positions]
        elif sd[text_positions].shape[0] < config.max_text_len:
            raise ConfigError(
                f"the checkpoint has {sd[text_positions].shape[0]} text positions, fewer than "
                f"max_text_len={config.max_text_len}; lower max_text_len"
            )
        else:
            sd[text_positions] = sd[text_positions][: config.max_text_len]
    if "token_type_embeddings.weight" in sd:
        # NLVR2 checkpoints add a third modality type (a second image); rows 0, 1 = text, image
        sd["token_type_embeddings.weight"] = sd["token_type_embeddings.weight"][:2]
    if config.relative_position_bias and "relative_position_bias_table" in sd:
        table = sd["relative_position_bias_table"]
        sd["relative_position_bias_table"] = resize_relative_position_table(table, config)
    if config.abs_pos_embed and "transformer.pos_embed" in sd:
        sd["transformer.pos_embed"] = resize_pos_embed(sd["transformer.pos_embed"], config)
    return sd


def load_state_dict_into(
    model: VLMo, state_dict: Mapping[str, torch.Tensor], *, allow_missing: Iterable[str] = ()
) -> LoadReport:
    """Copy an official state dict into ``model`` by name (adapted first, see the module doc).

    Args:
        allow_missing: heads (names of ``HEAD_PREFIXES``) that may be absent from the checkpoint
            and keep their initialisation, e.g. ``{"itm", "mlm"}`` for a retrieval checkpoint.
    Raises:
        ConfigError: a backbone parameter or a head not in ``allow_missing`` is missing, the
            checkpoint holds non-head parameters the model lacks, or shapes disagree.
    """
    allowed = set(allow_missing)
    unknown = allowed - set(HEAD_PREFIXES)
    if unknown:
        raise ConfigError(
            f"unknown heads in allow_missing: {sorted(unknown)}; known: {', '.join(HEAD_PREFIXES)}"
        )
    sd = adapt_state_dict(state_dict, model.config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    bad_missing = [k for k in missing if head_of(k) not in allowed]
    bad_unexpected = [k for k in unexpected if head_of(k) is None]
    if bad_missing:
        raise ConfigError(
            f"the VLMo checkpoint lacks {len(bad_missing)} parameters the model needs: "
            f"{_listing(bad_missing)}. Check that the checkpoint matches the config (preset, "
            "heads); heads you will train from scratch can be listed in allow_missing"
        )
    if bad_unexpected:
        raise ConfigError(
            f"the VLMo checkpoint has {len(bad_unexpected)} backbone parameters the model lacks: "
            f"{_listing(bad_unexpected)}. It was saved from another architecture; build the config "
            "with config_from_state_dict or the matching preset"
        )
    wrong = [
        f"{k} {tuple(sd[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in sd and sd[k].shape != expected[k].shape
    ]
    if wrong:
        raise ConfigError(f"VLMo checkpoint shapes differ from the config: {_listing(wrong)}")
    model.load_state_dict({k: v for k, v in sd.items() if k in expected}, strict=False)
    return LoadReport(missing=tuple(missing), unexpected=tuple(unexpected))


def load_vlmo(
    path: str | Path,
    *,
    allow_missing: Iterable[str] = (),
    **overrides: Any,
) -> tuple[VLMo, LoadReport]:
    """Build a :class:`VLMo` from a local checkpoint file and load its weights.

    ``overrides`` adjust the config read from the weights, e.g. ``image_size=384`` (the position
    tensors are resized) or ``heads=("itc",)`` (the other heads' weights are skipped).
    """
    state_dict = read_checkpoint(path)
    model = VLMo(config_from_state_dict(state_dict, **overrides))
    return model, load_state_dict_into(model, state_dict, allow_missing=allow_missing)
