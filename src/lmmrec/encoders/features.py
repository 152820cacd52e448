"""Feature extraction: every item of a dataset through an :class:`ItemEncoder`, into a FeatureSet.

This is the paper's frozen paradigm (§3): item vectors are computed once and stored. The result is
``<dataset>/features/<name>/`` with one ``<modality>.npy`` (``[n_items, D_m]`` float32, row i =
item i) per modality and ``manifest.json``:

* ``encoder``: ``ItemEncoder.describe()`` (spec, weights content hash, preprocessing, text
  template and truncation, dimensions);
* ``item_order_hash`` (of ``dataset.item_ids``) and ``catalog_hash`` (of the texts and image
  references; image files changed in place are not detected);
* ``missing``: the policy and, per modality, how many items had no input (``absent``: no image
  reference or an empty text; ``unreadable``: an image reference that could not be decoded), which
  items (``items``) and what was done (``action``);
* ``timing``: items encoded in this run, seconds, items per second, device, batch size;
* ``lineage`` (encoders loaded from a saved folder only): the base weights hash, the fine-tuning
  config and scores, the hash of the saved tensors (:mod:`lmmrec.encoders.saved`);
* ``key``: hash of everything that determines the vectors; an existing feature set with the same
  key is reused instead of re-extracted, one with another key is re-extracted and replaced.

Missing-modality policies (never a silent drop: rows stay aligned with items):
``zeros`` fills the rows with zeros (the manifest lists them; :func:`missing_mask`), ``mean`` fills
them with the mean of the other items' vectors, ``skip`` leaves the modality out of the feature set
when any item lacks it. A fused modality is missing only for items lacking both image and text.

Extraction is batched: a DataLoader yields whole batches, its workers decoding images with Pillow
and preprocessing; the encoder runs under ``torch.inference_mode`` on CUDA when present. Every
``chunk_batches`` batches the vectors are written to ``features/.<name>.work/chunks/`` (atomically),
so an interrupted run resumes at the first item not yet written; the final folder is written
atomically and the work folder removed.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from tqdm.auto import tqdm

from lmmrec.data.catalog import ItemCatalog
from lmmrec.data.dataset import Dataset
from lmmrec.data.features import FeatureSet
from lmmrec.encoders.base import INPUT_MODALITIES, ItemEncoder
from lmmrec.encoders.preprocessing import ItemBatch, Preprocessor
from lmmrec.encoders.towers import project_stored_towers
from lmmrec.errors import ConfigError, FeatureError
from lmmrec.io import atomic_path, hash_arrays, read_json, write_json
from lmmrec.runtime import DeviceChoice, PrecisionChoice, Runtime

logger = logging.getLogger(__name__)

FORMAT = "lmmrec-features"
FORMAT_VERSION = 1
MissingPolicy = Literal["zeros", "mean", "skip"]
# per item and input modality
PRESENT, ABSENT, UNREADABLE = 0, 1, 2


class CatalogBatches(TorchDataset):
    """Batch ``b`` of a catalog's items, loaded and preprocessed: items ``start + b * batch_size
    ...`` in catalog order, or, when ``items`` is given, ``items[b * batch_size ...]`` (any
    order, e.g. a shuffled list of fine-tuning pairs).

    Each element is ``({input modality: [B] int8 status}, encoder inputs)``; a status is
    :data:`PRESENT`, :data:`ABSENT` or :data:`UNREADABLE`. Runs in DataLoader workers.
    """

    def __init__(
        self,
        catalog: ItemCatalog,
        preprocessor: Preprocessor,
        inputs: tuple[str, ...],
        start: int,
        batch_size: int,
        items: np.ndarray | None = None,
    ) -> None:
        self.catalog, self.preprocessor, self.inputs = catalog, preprocessor, inputs
        self.start, self.batch_size = start, batch_size
        self.items = None if items is None else np.asarray(items, dtype=np.int64)

    def __len__(self) -> int:
        total = len(self.catalog) - self.start if self.items is None else len(self.items)
        return math.ceil(total / self.batch_size)

    def rows(self, batch: int) -> list[int]:
        """The item indices of batch ``batch``."""
        first = batch * self.batch_size
        if self.items is not None:
            return self.items[first : first + self.batch_size].tolist()
        first += self.start
        return list(range(first, min(first + self.batch_size, len(self.catalog))))

    def __getitem__(self, batch: int) -> tuple[dict[str, np.ndarray], dict[str, torch.Tensor]]:
        rows = self.rows(batch)
        status: dict[str, np.ndarray] = {}
        images = texts = None
        if "image" in self.inputs:
            images = [self.catalog.load_image(i) for i in rows]
            no_ref = np.array([self.catalog.image_path(i) is None for i in rows])
            loaded = np.array([image is not None for image in images])
            status["image"] = np.where(loaded, PRESENT, np.where(no_ref, ABSENT, UNREADABLE))
        if "text" in self.inputs:
            texts = [self.catalog.texts[i] for i in rows]
            status["text"] = np.array([PRESENT if t.strip() else ABSENT for t in texts])
        status = {m: s.astype(np.int8) for m, s in status.items()}
        return status, self.preprocessor(ItemBatch(texts=texts, images=images))


class _WorkFolder:
    """Chunks of an unfinished extraction: ``chunks/<first item>.npz`` plus ``work.json``.

    A chunk holds ``out_<modality>`` ``[n, D_m]`` and ``status_<input modality>`` ``[n]`` arrays
    of ``n`` consecutive items; batches are buffered and written ``chunk_batches`` at a time.
    """

    def __init__(self, folder: Path, key: str, chunk_batches: int) -> None:
        self.folder, self.chunks = folder, folder / "chunks"
        marker = folder / "work.json"
        if marker.is_file() and read_json(marker).get("key") != key:
            logger.info("discarding %s: it belongs to a different extraction", folder)
            shutil.rmtree(folder)
        self.chunks.mkdir(parents=True, exist_ok=True)
        write_json(marker, {"key": key})
        self.chunk_batches = chunk_batches
        self.done, self.end = self._contiguous()
        self._pending: list[dict[str, np.ndarray]] = []

    def _contiguous(self) -> tuple[list[Path], int]:
        """The chunks that continue each other from item 0 (those past a gap are deleted), and
        the first item after them."""
        contiguous, end = [], 0
        for path in sorted(self.chunks.glob("*.npz")):
            if int(path.stem) != end:
                path.unlink()
                continue
            with np.load(path, allow_pickle=False) as chunk:
                end += len(chunk[next(k for k in chunk.files if k.startswith("status_"))])
            contiguous.append(path)
        return contiguous, end

    def append(self, arrays: dict[str, np.ndarray]) -> None:
        """Buffer the arrays of the batch that starts at ``self.end`` (plus what is pending)."""
        self._pending.append(arrays)
        if len(self._pending) == self.chunk_batches:
            self.flush()

    def flush(self) -> None:
        """Write the pending batches as one chunk, atomically."""
        if not self._pending:
            return
        merged = {k: np.concatenate([p[k] for p in self._pending]) for k in self._pending[0]}
        path = self.chunks / f"{self.end:012d}.npz"
        with atomic_path(path) as tmp:
            np.savez(tmp, **merged)
        self.done.append(path)
        self.end += len(next(v for k, v in merged.items() if k.startswith("status_")))
        self._pending = []

    def read(self) -> dict[str, np.ndarray]:
        """All written chunks, concatenated: ``{out_<m> | status_<m>: [n_items, ...]}``."""
        parts: dict[str, list[np.ndarray]] = {}
        for path in self.done:
            with np.load(path, allow_pickle=False) as chunk:
                for k in chunk.files:
                    parts.setdefault(k, []).append(chunk[k])
        return {k: np.concatenate(v) for k, v in parts.items()}


def extract_features(
    dataset: Dataset,
    encoder: ItemEncoder,
    *,
    name: str,
    modalities: list[str] | None = None,
    batch_size: int = 64,
    num_workers: int | None = None,
    missing: MissingPolicy = "zeros",
    out_dir: Path | None = None,
    device: DeviceChoice = "auto",
    precision: PrecisionChoice = "fp32",
    chunk_batches: int = 16,
    overwrite: bool = False,
    progress: bool = True,
) -> FeatureSet:
    """Encode every item of ``dataset``, save the feature set and add it to ``dataset``.

    Args:
        name: feature set name (its folder's name; ``RunConfig.features`` selects it).
        modalities: output modalities to store; default ``encoder.default_modalities``.
        batch_size: items per encoder call.
        num_workers: DataLoader worker processes decoding and preprocessing (0: in this
            process); default 1 when images are read (decoding then overlaps the encoder), else 0
            (tokenising is cheaper than a process hand-off).
        missing: ``zeros``, ``mean`` or ``skip`` (module docstring).
        out_dir: the feature set folder; default ``dataset.root / "features" / name``.
        device, precision: as in training (``auto`` = CUDA when present; ``bf16`` autocast).
        chunk_batches: batches per resumable chunk.
        overwrite: re-extract even if the feature set exists with the same key (one made
            differently is always re-extracted and replaced).
        progress: show a progress bar.

    Returns:
        The feature set, also added to ``dataset``. The encoder is left on ``device``.

    Raises:
        ConfigError: bad name, modality, policy or sizes; no folder to write to.
        FeatureError: the dataset has no catalog; a modality is missing for every item (unless
            ``skip``).
    """
    _check_arguments(name, missing, batch_size, num_workers, chunk_batches)
    if dataset.catalog is None:
        raise FeatureError(
            f"dataset {dataset.name!r} has no item catalog (texts, image paths) to encode; load "
            "it from a source with item content, or import precomputed features"
        )
    modalities = list(modalities or encoder.default_modalities)
    unknown = sorted(set(modalities) - set(encoder.modalities))
    if unknown or not modalities:
        raise ConfigError(
            f"encoder {encoder.spec!r} makes {', '.join(encoder.modalities)}; cannot extract "
            f"{unknown or 'no modality'}"
        )
    if out_dir is None and dataset.root is None:
        raise ConfigError(f"dataset {dataset.name!r} has no folder; pass out_dir")
    out_dir = Path(out_dir) if out_dir is not None else Path(dataset.root) / "features" / name
    runtime = Runtime.resolve(device, precision)
    description = encoder.describe()
    provenance = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "encoder": description,
        "modalities": modalities,
        "dtype": "float32",
        "precision": runtime.precision,
        "n_items": dataset.n_items,
        "item_order_hash": _text_hash(dataset.item_ids.tolist()),
        "catalog_hash": _text_hash(
            dataset.catalog.texts + [ref or "" for ref in dataset.catalog.images]
        ),
    }
    key = _text_hash([json.dumps(provenance | {"missing": missing}, sort_keys=True)])
    existing = None if overwrite else _existing(out_dir, key)
    if existing is not None:
        logger.info("feature set %s is up to date (key %s)", out_dir, key)
        dataset.add_feature_set(existing)
        return existing
    inputs = tuple(
        m for m in INPUT_MODALITIES if any(m in encoder.inputs_of(o) for o in modalities)
    )
    if num_workers is None:
        num_workers = 1 if "image" in inputs else 0
    began = time.perf_counter()
    # heads over tower vectors that a stored feature set already holds (a fine-tuned dual)
    raw = project_stored_towers(encoder, dataset.features.values(), dataset.catalog)
    resumed = 0
    if raw is None:  # run the encoder (the usual case), resumably
        work = _WorkFolder(out_dir.parent / f".{out_dir.name}.work", key, chunk_batches)
        resumed = work.end
        batches = CatalogBatches(dataset.catalog, encoder.preprocessor, inputs, resumed, batch_size)
        _encode(batches, encoder, modalities, runtime, work, num_workers, progress)
        raw = work.read()
    seconds = time.perf_counter() - began
    encoded = dataset.n_items - resumed
    timing = {
        "encoded_items": encoded,
        "resumed_items": resumed,
        "seconds": round(seconds, 3),
        "items_per_second": round(encoded / seconds, 2) if encoded else None,
        "device": str(runtime.device),
        "batch_size": batch_size,
        "num_workers": num_workers,
    }
    status = {m: raw[f"status_{m}"] for m in inputs}
    arrays, report = apply_missing_policy({m: raw[f"out_{m}"] for m in modalities}, status, missing)
    manifest = provenance | {
        "key": key,
        "missing": {"policy": missing, "modalities": report},
        "timing": timing,
    }
    if description.get("lineage") is not None:  # a saved, adapted encoder (also in the key)
        manifest["lineage"] = description["lineage"]
    FeatureSet(name=name, arrays=arrays, manifest=manifest).save(out_dir)
    shutil.rmtree(out_dir.parent / f".{out_dir.name}.work", ignore_errors=True)
    features = FeatureSet.load(out_dir)  # as stored: manifest as JSON, with name and dims
    dataset.add_feature_set(features)
    return features


def _check_arguments(
    name: str, missing: str, batch_size: int, num_workers: int | None, chunk_batches: int
) -> None:
    if not name or Path(name).name != name or name.startswith("."):
        raise ConfigError(f"feature set name {name!r} must be a plain folder name, e.g. clip-b16")
    if missing not in get_args(MissingPolicy):
        raise ConfigError(
            f"unknown missing-modality policy {missing!r}; use {', '.join(get_args(MissingPolicy))}"
        )
    for what, value, low in (
        ("batch_size", batch_size, 1),
        ("num_workers", 0 if num_workers is None else num_workers, 0),
        ("chunk_batches", chunk_batches, 1),
    ):
        if value < low:
            raise ConfigError(f"{what} must be at least {low}, got {value}")


def _text_hash(strings: list[str]) -> str:
    """Content hash of a list of strings (order matters)."""
    joined = "\x1e".join(strings).encode()
    return hash_arrays(np.frombuffer(joined, dtype=np.uint8))


def _existing(out_dir: Path, key: str) -> FeatureSet | None:
    """The feature set at ``out_dir`` if it was made with ``key``; a stale one is announced."""
    if not (out_dir / "manifest.json").is_file():
        return None
    if read_json(out_dir / "manifest.json").get("key") == key:
        return FeatureSet.load(out_dir)
    logger.warning(
        "%s was made differently (encoder, weights, inputs or policy); replacing it", out_dir
    )
    return None


def _encode(
    batches: CatalogBatches,
    encoder: ItemEncoder,
    modalities: list[str],
    runtime: Runtime,
    work: _WorkFolder,
    num_workers: int,
    progress: bool,
) -> None:
    """Run the encoder over ``batches`` in inference mode, appending outputs to ``work``."""
    loader = DataLoader(
        batches,
        batch_size=None,  # CatalogBatches yields whole batches
        num_workers=num_workers,
        pin_memory=runtime.device.type == "cuda",
        prefetch_factor=4 if num_workers else None,
    )
    was_training = encoder.training
    encoder.to(runtime.device).eval()
    n_items = len(batches.catalog)
    bar = tqdm(
        total=n_items, initial=batches.start, unit="item", disable=not progress, desc="encode"
    )
    try:
        with torch.inference_mode(), runtime.autocast():
            for status, inputs in loader:
                outputs = encoder(
                    {k: v.to(runtime.device, non_blocking=True) for k, v in inputs.items()}
                )
                arrays = {f"out_{m}": outputs[m].float().cpu().numpy() for m in modalities}
                work.append(arrays | {f"status_{m}": s for m, s in status.items()})  # [B, D_m], [B]
                bar.update(len(next(iter(status.values()))))
            work.flush()
    finally:
        bar.close()
        encoder.train(was_training)


def apply_missing_policy(
    arrays: dict[str, np.ndarray], status: dict[str, np.ndarray], policy: MissingPolicy
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
    """Fill (or drop) the rows of items that lack a modality's input.

    Args:
        arrays: ``{output modality: [N, D_m]}`` raw encoder outputs.
        status: ``{input modality: [N] int8}`` :data:`PRESENT` / :data:`ABSENT` /
            :data:`UNREADABLE`.
        policy: ``zeros``, ``mean`` or ``skip`` (module docstring).

    Returns:
        The arrays to store, and per output modality a report: ``count``, ``absent``,
        ``unreadable``, ``items`` (indices) and ``action``.

    Raises:
        FeatureError: every item lacks a modality (except under ``skip``, which drops it).
    """
    kept: dict[str, np.ndarray] = {}
    report: dict[str, dict[str, Any]] = {}
    for modality, array in arrays.items():
        needed = ItemEncoder.inputs_of(modality)
        # an input modality is missing where its status says so; a fused one where all are
        missing = np.logical_and.reduce([status[m] != PRESENT for m in needed])
        codes = status[modality] if modality in status else np.where(missing, ABSENT, PRESENT)
        entry: dict[str, Any] = {
            "count": int(missing.sum()),
            "absent": int((missing & (codes == ABSENT)).sum()),
            "unreadable": int((missing & (codes == UNREADABLE)).sum()),
            "items": np.flatnonzero(missing).tolist(),
            "action": "none" if not missing.any() else policy,
        }
        report[modality] = entry
        if missing.any() and policy == "skip":
            entry["action"] = "skipped"
            continue
        if missing.all():
            raise FeatureError(
                f"no item has the inputs of modality {modality!r} ({', '.join(needed)}); "
                "extract other modalities (--modalities) or use --missing skip"
            )
        array = array.astype(np.float32, copy=True)
        array[missing] = 0.0 if policy == "zeros" else array[~missing].mean(axis=0)
        kept[modality] = array
    if not kept:
        raise FeatureError(
            "every modality was skipped because some items lack it; use --missing zeros or mean"
        )
    return kept, report


def missing_mask(features: FeatureSet, modality: str, n_items: int) -> np.ndarray:
    """``[n_items]`` bool: True for items whose ``modality`` row was filled by the policy.

    All False for feature sets without a missing report (e.g. imported MMRec features).
    """
    mask = np.zeros(n_items, dtype=bool)
    report = features.manifest.get("missing", {}).get("modalities", {}).get(modality, {})
    mask[report.get("items", [])] = True
    return mask
