"""What a bundle carries to place new items from their content: the encoder and the content head.

A bundle of a run trained with item features holds a ``content/`` folder::

    content/head.safetensors   weight.<m> [D, d_m], bias [D]: the content head
                               (:class:`~lmmrec.models.content_head.ContentHead`); fill.<m> [d_m]:
                               the features of an item that lacks modality m's input
    content/encoder/           the item encoder that made the run's features, with its adapters
                               and trained heads (:meth:`ItemEncoder.save`; no pickles)

A new item's vector is ``head(features)``, where ``features`` are the encoder's outputs for its
text and image, with ``fill`` in place of a modality whose input it lacks: zeros, or the mean of
the catalogue's vectors when the feature set was made with the ``mean`` policy (the rows the model
saw for such items in training). :class:`Placer` does this in batches. The head is, by default, a
ridge map from features to the learned item vectors fitted on the catalogue's items
(:mod:`lmmrec.models.content_map`; any model trained with features), or, with
``placement="model"``, the model's own content part (VBPR, FREEDOM, BM3):
:func:`_content_head_of_run`.

Which encoder (:func:`content_of_run`): an end-to-end run's trained encoder (from its best
checkpoint); for frozen and fine-tuned runs, the encoder the feature set's manifest names, built
from its spec, or found as a saved folder by its checkpoint hash (``<dataset>/encoders/*``), or
given by the caller. It must reproduce the feature set's weights hash and preprocessing: a
different encoder would place new items in another space than the catalogue's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from lmmrec.encoders.base import ItemEncoder
from lmmrec.encoders.preprocessing import ItemBatch
from lmmrec.encoders.saved import is_saved_encoder, load_encoder, read_manifest
from lmmrec.errors import ConfigError, DataError
from lmmrec.models.base import ItemFeatures
from lmmrec.models.content_head import ContentHead

if TYPE_CHECKING:
    from lmmrec.data.dataset import Dataset
    from lmmrec.training.config import RunConfig
    from lmmrec.training.trainer import Trainer

CONTENT = "content"
HEAD = "head.safetensors"
ENCODER = "encoder"
FILL = "fill."


@dataclass
class ContentPart:
    """The encoder and content head of a bundle (module doc).

    Attributes:
        head: the model's content head, ``{m: [n, d_m]} -> [n, D]``.
        fill: ``{m: [d_m]}`` features of an item lacking modality ``m``'s input.
        encoder: the encoder in memory (an export), or ``None`` (a loaded bundle: see
            ``encoder_dir``).
        encoder_dir: the saved encoder folder of a loaded bundle.
        record: the manifest's ``content`` section (encoder spec, weights hash, strategy, fill
            policy).
    """

    head: ContentHead
    fill: dict[str, torch.Tensor]
    encoder: ItemEncoder | None = None
    encoder_dir: Path | None = None
    record: dict[str, Any] | None = None

    def save(self, folder: Path) -> dict[str, Any]:
        """Write ``head.safetensors`` and ``encoder/`` into ``folder``; the manifest section."""
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        fills = {FILL + m: t.float().contiguous() for m, t in self.fill.items()}
        save_file(self.head.tensors() | fills, str(folder / HEAD))
        if self.encoder is not None:
            self.encoder.save(folder / ENCODER)
        elif self.encoder_dir is not None:
            import shutil

            shutil.copytree(self.encoder_dir, folder / ENCODER)
        manifest = read_manifest(folder / ENCODER)
        return {
            **(self.record or {}),
            "modalities": self.head.modalities,
            "dims": self.head.dims,
            "encoder": {k: manifest.get(k) for k in ("spec", "options", "strategy", "lora_rank")}
            | {"weights_hash": manifest["weights_hash"]},
        }

    @classmethod
    def load(cls, folder: Path, record: dict[str, Any]) -> ContentPart:
        """The part saved in ``folder`` (the encoder stays on disk until :meth:`load_encoder`).

        Raises:
            DataError: a missing or damaged head file.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(folder / HEAD))
        except (SafetensorError, OSError, ValueError) as error:
            raise DataError(
                f"{folder / HEAD}: unreadable content head ({error}); export the bundle again"
            ) from None
        head = ContentHead.from_tensors(
            {k: v for k, v in tensors.items() if not k.startswith(FILL)}
        )
        fill = {k[len(FILL) :]: v for k, v in tensors.items() if k.startswith(FILL)}
        if set(fill) != set(head.modalities):
            raise DataError(f"{folder / HEAD}: fills {sorted(fill)} do not match the head's")
        return cls(head=head, fill=fill, encoder_dir=folder / ENCODER, record=record)

    def load_encoder(self) -> ItemEncoder:
        """The encoder, in eval mode (loaded from ``encoder_dir`` on first use).

        Raises:
            ConfigError: the folder cannot be loaded (its base weights are missing or changed).
        """
        if self.encoder is None:
            if self.encoder_dir is None:
                raise ConfigError("this content part has no encoder; export the bundle again")
            self.encoder = load_encoder(self.encoder_dir)
        return self.encoder.eval()


class Placer:
    """New items' vectors from their texts and images: encoder, fills, content head.

    Args:
        part: the bundle's content part.
        batch_size: items per encoder forward.
    """

    def __init__(self, part: ContentPart, batch_size: int = 64) -> None:
        self.part = part
        self.encoder = part.load_encoder()
        self.batch_size = batch_size
        dims = self.encoder.output_dims()
        wrong = {m: d for m, d in part.head.dims.items() if dims.get(m) != d}
        if wrong:
            raise ConfigError(
                f"the bundle's encoder {self.encoder.spec!r} makes {dims}, its content head "
                f"reads {wrong}; export the bundle again"
            )
        # the input modalities the head's features are computed from
        self.inputs = tuple(
            m
            for m in ("image", "text")
            if any(m in ItemEncoder.inputs_of(o) for o in part.head.modalities)
        )

    def features(
        self, texts: Sequence[str], images: Sequence[Image.Image | None]
    ) -> dict[str, torch.Tensor]:
        """``{m: [n, d_m]}``: the encoder's outputs, ``fill`` where an item lacks the input."""
        n = len(texts)
        parts: dict[str, list[torch.Tensor]] = {m: [] for m in self.part.head.modalities}
        with torch.inference_mode():
            for start in range(0, n, self.batch_size):
                rows = slice(start, start + self.batch_size)
                batch = ItemBatch(
                    texts=list(texts[rows]) if "text" in self.inputs else None,
                    images=list(images[rows]) if "image" in self.inputs else None,
                )
                out = self.encoder(self.encoder.preprocess(batch))
                for modality in parts:
                    parts[modality].append(out[modality].float())
        present = {
            "text": torch.tensor([bool(t.strip()) for t in texts]),
            "image": torch.tensor([i is not None for i in images]),
        }
        feats = {}
        for modality, chunks in parts.items():
            values = torch.cat(chunks)  # [n, d_m]
            needed = [present[m] for m in ItemEncoder.inputs_of(modality)]
            lacking = ~torch.stack(needed).any(dim=0)  # [n]: every input of m is absent
            feats[modality] = torch.where(lacking[:, None], self.part.fill[modality], values)
        return feats

    def vectors(self, texts: Sequence[str], images: Sequence[Image.Image | None]) -> torch.Tensor:
        """``[n, D]`` float32 item vectors of ``n`` items (``""`` / ``None``: no text / image)."""
        with torch.inference_mode():
            return self.part.head(self.features(texts, images)).float()


PLACEMENTS = ("map", "model")


def _content_head_of_run(
    config: RunConfig, trainer: Trainer, placement: str, item_feats: ItemFeatures | None
) -> tuple[ContentHead | None, dict[str, Any], str | None]:
    """The head that places the new items of a run trained with item features (stored or
    encoded end to end), what to record of it, and why there is none.

    ``map``: a ridge map from item features to the model's learned item vectors, fitted on the
    items with training interactions (:meth:`Trainer.content_map`), which keeps new items on
    the learned vectors' scale; any model trained with features has one. ``model``: the model's
    own content part (VBPR, FREEDOM, BM3), whose scale its loss leaves free (BM3's new items
    outscore every learned one on the demo shop; benchmarks/README.md).
    """
    from lmmrec.models.cold_start import content_head

    if placement == "model":  # heads go to the CPU: the bundle and its placer run there
        head = content_head(trainer.model)
        if head is None:
            why = f"model {config.model!r} has no content part (ID-only); try placement map"
            return None, {}, why
        return head.cpu(), {"placement": "model"}, None
    chosen = trainer.content_map(item_feats)
    record = {"placement": "map", "ridge": chosen.ridge, "selected_by": chosen.selected_by}
    return chosen.head.cpu(), record, None


def content_of_run(
    config: RunConfig,
    dataset: Dataset,
    trainer: Trainer,
    encoder: str | Path | None = None,
    placement: str = "map",
    item_feats: ItemFeatures | None = None,
) -> tuple[ContentPart | None, str | None]:
    """The content part of a run's bundle, or ``(None, why)`` when new items cannot be placed.

    Args:
        encoder: a spec or saved folder to use for a frozen or fine-tuned run's features
            (default: found from the feature set's manifest).
        placement: ``map`` or ``model`` (:func:`_content_head_of_run`).
        item_feats: every item's features as ``trainer.item_features()`` gives them, if at
            hand (end to end, the catalogue is then not encoded again for the map).

    Raises:
        ConfigError: an unknown placement, or the run's features name an encoder that cannot
            be found or rebuilt as it was (weights hash or preprocessing differ).
    """
    if placement not in PLACEMENTS:
        raise ConfigError(f"placement {placement!r} is unknown; use one of {', '.join(PLACEMENTS)}")
    if config.paradigm == "end2end":
        head, placed, no_head = _content_head_of_run(config, trainer, placement, item_feats)
        if head is None:
            return None, no_head
        model_encoder = trainer.step_module.encoding.encoder  # type: ignore[union-attr]
        fill = {m: torch.zeros(d) for m, d in head.dims.items()}  # ItemEncoding zeroes them
        record = {"fill": "zeros", "source": "end-to-end run"} | placed
        return ContentPart(head, fill, encoder=model_encoder, record=record), None
    if config.features is None:
        return None, (
            f"the run of {config.model!r} has no item features; train it with features=NAME "
            "(an ID-only model ignores them) to place new items by a map"
        )
    features = dataset.feature_set(config.features)
    made = features.manifest.get("encoder")  # the encoder first: without one, no head to fit
    if not isinstance(made, dict) or "weights_hash" not in made:
        return None, f"feature set {features.name!r} does not record the encoder that made it"
    head, placed, no_head = _content_head_of_run(config, trainer, placement, item_feats)
    if head is None:
        return None, no_head
    model_encoder = _feature_encoder(made, features.name, dataset, encoder)
    if model_encoder.lineage is None:  # built from its spec: saved as the spec plus buffers
        model_encoder.apply_strategy("frozen")
    policy = features.manifest.get("missing", {}).get("policy", "zeros")
    fill = {}
    for modality, dim in head.dims.items():
        fill[modality] = torch.zeros(dim)
        if policy == "mean":
            from lmmrec.encoders.features import missing_mask

            lacking = missing_mask(features, modality, dataset.n_items)
            rows = features.arrays[modality]  # [I, d_m]; the policy wrote the mean into lacking
            mean = rows[lacking][0] if lacking.any() else rows.mean(axis=0)
            fill[modality] = torch.from_numpy(np.array(mean, dtype=np.float32))
    record = {"fill": policy, "source": f"feature set {features.name}"} | placed
    return ContentPart(head, fill, encoder=model_encoder, record=record), None


def _feature_encoder(
    made: dict[str, Any], name: str, dataset: Dataset, given: str | Path | None
) -> ItemEncoder:
    """The encoder the manifest section ``made`` describes, checked against it (module doc)."""
    want = made["weights_hash"]
    if given is not None:
        candidate = load_encoder(given)
    elif made.get("lineage", {}).get("checkpoint_hash"):
        candidate = _find_saved(made["lineage"]["checkpoint_hash"], dataset)
        if candidate is None:
            raise ConfigError(
                f"feature set {name!r} was made by a saved (fine-tuned) encoder that is not in "
                f"{_encoder_roots(dataset)}; pass it: lmmrec export RUN BUNDLE --encoder FOLDER"
            )
    else:
        candidate = load_encoder(made["spec"])
    described = json.loads(json.dumps(candidate.describe(), default=str))
    same_preprocessing = described["preprocessing"] == made.get("preprocessing")
    if described["weights_hash"] != want or not same_preprocessing:
        what = "weights" if described["weights_hash"] != want else "preprocessing"
        raise ConfigError(
            f"encoder {candidate.spec!r}: its {what} differ from those that made feature set "
            f"{name!r} (weights hash {want}); pass the encoder that made them: lmmrec export "
            "RUN BUNDLE --encoder SPEC_OR_FOLDER"
        )
    return candidate


def _encoder_roots(dataset: Dataset) -> list[Path]:
    return [] if dataset.root is None else [Path(dataset.root) / "encoders"]


def _find_saved(checkpoint_hash: str, dataset: Dataset) -> ItemEncoder | None:
    """The saved encoder folder under the dataset's ``encoders/`` with that checkpoint hash."""
    for root in _encoder_roots(dataset):
        for folder in sorted(root.glob("*")) if root.is_dir() else []:
            if is_saved_encoder(folder):
                tensors = read_manifest(folder).get("tensors", {})
                if tensors.get("sha256") == checkpoint_hash:
                    return load_encoder(folder)
    return None
