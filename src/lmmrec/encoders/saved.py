"""Encoders as folders: an adapted encoder saved and loaded back by its spec, with no pickles.

A fine-tuned (or end-to-end trained) encoder is its spec plus what training changed, the way
transformers' ``save_pretrained`` and peft's adapter files work. :meth:`ItemEncoder.save` writes,
atomically::

    <folder>/encoder.json          spec, build options, strategy, LoRA rank, lineage, hashes
    <folder>/tensors.safetensors   every parameter a strategy or objective trained (projection
                                   heads, top layers, LoRA adapters, the contrastive
                                   temperature), plus the buffers

``encoder.json``::

    {"format": "lmmrec-encoder", "version": 1,
     "spec": "dual:cnn:/m/vit+sbert:/m/minilm", "class": "lmmrec.encoders.dual.DualEncoder",
     "options": {"dim": 128, "seed": 0}, "strategy": "lora:8", "lora_rank": 8,
     "added_temperature": true,
     "tensors": {"file": "tensors.safetensors", "count": 42, "sha256": "..."},
     "weights_hash": "...",                  # of the whole state dict, checked on load
     "lineage": {"base_spec": "...", "base_weights_hash": "...", "checkpoint_hash": "...",
                 "finetune": {"config": {...}, "dataset": "...", "best_epoch": 3, ...}}}

:func:`load_encoder` rebuilds the encoder from the spec with the saved options, injects LoRA
adapters of the saved rank, adds the temperature if fine-tuning added one, loads the tensors and
checks the whole state against ``weights_hash``. A mismatch names its cause: the base weights
behind the spec changed (``base_weights_hash``) or the folder was altered. Tensors are read with
safetensors only; a file holding pickled objects is refused with one line, never unpickled. A
``trusted`` option saved by an older version (VLMo's former opt-in to unpickling its base
checkpoint, now gone) is dropped.

Relative paths inside a spec are resolved against the working directory, as for ``build``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from lmmrec.encoders.base import ItemEncoder, weights_hash
from lmmrec.encoders.registry import build
from lmmrec.errors import ConfigError
from lmmrec.io import atomic_path

FORMAT = "lmmrec-encoder"
FORMAT_VERSION = 1
MANIFEST = "encoder.json"
TENSORS = "tensors.safetensors"
RETIRED_OPTIONS = ("trusted",)  # saved by older versions, no longer accepted: dropped
PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")  # a pickle protocol byte; torch.save's zip archive


def is_saved_encoder(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by :meth:`ItemEncoder.save`."""
    path = Path(path).expanduser()
    return path.is_dir() and (path / MANIFEST).is_file()


def file_hash(path: Path) -> str:
    """sha256 (16 hex digits) of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _plain_options(encoder: ItemEncoder) -> dict[str, Any]:
    options = {k: str(v) if isinstance(v, Path) else v for k, v in encoder.build_options.items()}
    try:
        json.dumps(options)
    except TypeError as error:
        raise ConfigError(
            f"encoder {encoder.spec!r}: build options {sorted(options)} cannot be saved as JSON "
            f"({error}); build it with plain values (numbers, strings, booleans)"
        ) from None
    return options


def _tensors_to_save(encoder: ItemEncoder) -> dict[str, torch.Tensor]:
    """Trained parameters and every buffer, on the CPU, contiguous, no storage shared."""
    names = set(encoder.tuned_names()) | {n for n, _ in encoder.named_buffers()}
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in encoder.state_dict().items():
        if name not in names:
            continue
        tensor = tensor.detach().to("cpu").contiguous()
        if tensor.data_ptr() in seen and tensor.numel():  # safetensors refuses shared storage
            tensor = tensor.clone()
        seen.add(tensor.data_ptr())
        tensors[name] = tensor
    return tensors


def save_encoder(
    encoder: ItemEncoder, folder: Path, *, lineage: dict[str, Any] | None = None
) -> Path:
    """:meth:`ItemEncoder.save` (module docstring). Returns ``folder``.

    Raises:
        ConfigError: ``folder`` exists, is not empty and is not a saved encoder (it is never
            replaced), or the build options are not plain values.
    """
    from safetensors.torch import save_file

    folder = Path(folder).expanduser()
    occupied = folder.exists() and (not folder.is_dir() or any(folder.iterdir()))
    if occupied and not is_saved_encoder(folder):
        raise ConfigError(
            f"{folder} exists and is not a saved encoder; choose a new or empty folder"
        )
    tensors = _tensors_to_save(encoder)
    record = dict(encoder.lineage or {}) | dict(lineage or {})
    record["base_spec"] = encoder.spec
    record["base_weights_hash"] = encoder.base_weights_hash
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "spec": encoder.spec,
        "class": f"{type(encoder).__module__}.{type(encoder).__qualname__}",
        "options": _plain_options(encoder),
        "strategy": encoder.strategy,
        "lora_rank": encoder.lora_rank,
        "added_temperature": encoder.temperature_name is None and hasattr(encoder, "logit_scale"),
        "weights_hash": weights_hash(encoder.state_dict().items()),
    }
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        save_file(tensors, str(tmp / TENSORS), metadata={"format": FORMAT})
        record["checkpoint_hash"] = file_hash(tmp / TENSORS)
        manifest["tensors"] = {
            "file": TENSORS,
            "count": len(tensors),
            "sha256": record["checkpoint_hash"],
        }
        manifest["lineage"] = record
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return folder


def read_manifest(folder: Path) -> dict[str, Any]:
    """The checked ``encoder.json`` of a saved encoder folder.

    Raises:
        ConfigError: missing, not JSON, another format or version, or lacking keys.
    """
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except OSError as error:
        raise ConfigError(
            f"cannot read {path} ({error.strerror}); save the encoder again"
        ) from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path} is not valid JSON ({error}); save the encoder again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ConfigError(f"{path} is not an lmmrec encoder manifest (format {FORMAT!r})")
    if manifest.get("version") != FORMAT_VERSION:
        raise ConfigError(
            f"{path} has format version {manifest.get('version')}; this lmmrec reads version "
            f"{FORMAT_VERSION}: save the encoder again with this version"
        )
    required = ("spec", "options", "lora_rank", "weights_hash", "tensors", "lineage")
    missing = [k for k in required if k not in manifest]
    if missing or not isinstance(manifest["options"], dict):
        raise ConfigError(f"{path} lacks {missing or ['options']}; save the encoder again")
    return manifest


def read_tensors(path: Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a saved encoder's safetensors file, refusing pickles and altered files.

    Raises:
        ConfigError: one line naming the file: missing, a pickle (never unpickled), a content
            hash other than ``sha256``, or not a readable safetensors file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise ConfigError(f"{path} is missing: the encoder folder is incomplete; save it again")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head.startswith(PICKLE_MAGIC[0]) or head.startswith(PICKLE_MAGIC[1]):
        raise ConfigError(
            f"{path} holds pickled Python objects, which lmmrec never loads (they can run code); "
            "save the encoder again with ItemEncoder.save"
        )
    if sha256 is not None and file_hash(path) != sha256:
        raise ConfigError(
            f"{path} was changed after it was saved (content hash differs from encoder.json); "
            "save the encoder again"
        )
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(
            f"{path} is damaged or not a safetensors file ({reason}); save the encoder again"
        ) from None


def load_encoder(spec_or_folder: str | Path, **options: Any) -> ItemEncoder:
    """An encoder from a folder written by :meth:`ItemEncoder.save`, or from a spec.

    Args:
        spec_or_folder: a saved encoder folder (recognised by its ``encoder.json``) or a spec
            string for :func:`~lmmrec.encoders.registry.build` (``"clip:/models/clip-b16"``).
        options: build options; for a folder they override the saved ones.

    Returns:
        The encoder in eval mode; a loaded one keeps its strategy's record, so saving it again
        writes the same tensors, and its :attr:`~ItemEncoder.lineage` is the folder's.

    Raises:
        ConfigError: a folder that is not a saved encoder, a damaged or altered folder, base
            weights that changed since saving, or any ``build`` error.
    """
    path = Path(spec_or_folder).expanduser()
    if path.is_dir():
        if not (path / MANIFEST).is_file():
            raise ConfigError(
                f"{path} is a folder but not a saved encoder (no {MANIFEST}); give a folder "
                f"written by ItemEncoder.save or a spec such as clip:{path}"
            )
        return _load_folder(path, options)
    spec = str(spec_or_folder)
    if ":" not in spec and ("/" in spec or isinstance(spec_or_folder, Path)):
        raise ConfigError(f"no saved encoder at {path}: the folder does not exist")
    return build(spec, **options)


def _load_folder(folder: Path, options: dict[str, Any]) -> ItemEncoder:
    manifest = read_manifest(folder)
    saved = {k: v for k, v in manifest["options"].items() if k not in RETIRED_OPTIONS}
    tensors = read_tensors(folder / TENSORS, manifest["tensors"].get("sha256"))
    encoder = build(manifest["spec"], **(saved | options))
    base = encoder.remember_base_weights()
    if manifest["lora_rank"]:
        encoder.add_lora(int(manifest["lora_rank"]))
    if manifest.get("added_temperature"):
        encoder.contrastive_scale()
    state = encoder.state_dict()
    unexpected = sorted(set(tensors) - set(state))
    wrong = [
        f"{k} {tuple(v.shape)} vs {tuple(state[k].shape)}"
        for k, v in tensors.items()
        if k in state and v.shape != state[k].shape
    ]
    if unexpected or wrong:
        problem = f"unknown tensors {unexpected[:4]}" if unexpected else f"shapes {wrong[:4]}"
        raise ConfigError(
            f"{folder}: {problem} do not fit {manifest['spec']!r} built with options "
            f"{saved | options}; load it with the options it was saved with"
        )
    encoder.load_state_dict(tensors, strict=False)
    lineage = dict(manifest["lineage"])
    want_base = lineage.get("base_weights_hash")
    if weights_hash(encoder.state_dict().items()) != manifest["weights_hash"]:
        if want_base is not None and base != want_base:
            raise ConfigError(
                f"{folder}: the base weights of {manifest['spec']!r} (hash {base}) are not those "
                f"the encoder was adapted from ({want_base}); restore the base model files or "
                "fine-tune again"
            )
        raise ConfigError(
            f"{folder}: the loaded weights differ from those saved (weights_hash); the folder "
            "is damaged or was saved with other build options: save the encoder again"
        )
    encoder.mark_tuned(p for n, p in encoder.named_parameters() if n in tensors)
    encoder.strategy = manifest.get("strategy")
    encoder.base_weights_hash = want_base or base
    encoder.lineage = lineage  # content only: moving the folder changes no feature key
    return encoder.eval()
