"""Serving bundles: a trained model as vectors, raw id maps, seen items and a manifest.

A bundle is a folder that needs neither the training data nor a trainer to be served::

    bundle.json            manifest: format, model, dataset hash, feature lineage, metrics at
                           export, sizes, content hash of the arrays
    vectors.safetensors    user_vecs [U, D] and item_vecs [I, D] float32 (the model's embed());
                           seen_indptr [U + 1] and seen_items [N] int64: each user's items (CSR)
    users.parquet          raw_id                  (row u = user u)
    items.parquet          raw_id, text, image     (row i = item i; image is a path or URL)
    content/               only for models that can place new items from content: the item
                           encoder (adapters included) and the model's content head
                           (:mod:`lmmrec.serving.content`)
    updates/               items added or updated through the service, an append-only journal
                           replayed on load (:mod:`lmmrec.serving.journal`)

Nothing is pickled (safetensors and Parquet), and the folder is written atomically: an export that
fails leaves the previous bundle in place. "Seen" items are all of a user's known interactions
(train, validation and test): a served user is never recommended what they already have.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from safetensors.numpy import load_file, save_file

import lmmrec
from lmmrec.errors import DataError
from lmmrec.io import atomic_path, hash_arrays, read_json, write_json
from lmmrec.serving.content import CONTENT, ContentPart
from lmmrec.serving.journal import Catalogue, Journal, apply_updates

FORMAT = "lmmrec-bundle"
FORMAT_VERSION = 1
MANIFEST = "bundle.json"
VECTORS = "vectors.safetensors"
USERS = "users.parquet"
ITEMS = "items.parquet"


@dataclass
class Bundle:
    """Everything a service needs to rank items for users, in index order.

    Attributes:
        user_vecs: ``[U, D]`` float32 final user vectors.
        item_vecs: ``[I, D]`` float32 final item vectors; score = ``user_vecs @ item_vecs.T``.
        user_ids, item_ids: ``[U]`` and ``[I]`` raw ids (strings), unique.
        seen: ``[U, I]`` binary CSR matrix of each user's known items.
        texts: ``I`` item texts (``""`` when none).
        images: ``I`` image references, a path or a URL (``None`` when none).
        manifest: provenance (model, dataset hash, metrics, ...), see the module doc.
        content: the encoder and content head that place new items (``None``: the model
            cannot, or the run's features record no encoder).
    """

    user_vecs: np.ndarray
    item_vecs: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    seen: sp.csr_matrix
    texts: list[str]
    images: list[str | None]
    manifest: dict[str, Any] = field(default_factory=dict)
    content: ContentPart | None = None

    def __post_init__(self) -> None:
        self.user_vecs = np.ascontiguousarray(self.user_vecs, dtype=np.float32)
        self.item_vecs = np.ascontiguousarray(self.item_vecs, dtype=np.float32)
        self.user_ids = np.asarray(self.user_ids).astype(str).astype(object)
        self.item_ids = np.asarray(self.item_ids).astype(str).astype(object)
        n_users, n_items = len(self.user_ids), len(self.item_ids)
        checks = [
            (self.user_vecs.shape[0] == n_users, f"{self.user_vecs.shape[0]} user vectors"),
            (self.item_vecs.shape[0] == n_items, f"{self.item_vecs.shape[0]} item vectors"),
            (self.user_vecs.shape[1] == self.item_vecs.shape[1], "vector widths that differ"),
            (self.seen.shape == (n_users, n_items), f"a {self.seen.shape} seen matrix"),
            (len(self.texts) == len(self.images) == n_items, f"{len(self.texts)} item texts"),
        ]
        for ok, what in checks:
            if not ok:
                raise DataError(
                    f"bundle with {n_users} users and {n_items} items has {what}; build it from "
                    "one model's embed() and its dataset (export_bundle does)"
                )
        for what, ids in (("user", self.user_ids), ("item", self.item_ids)):
            if len(np.unique(ids)) != len(ids):
                raise DataError(f"bundle {what} ids are not unique; every raw id must name one row")
        self.seen = sp.csr_matrix(self.seen, dtype=np.float32)
        self.seen.sum_duplicates()
        self.seen.data[:] = 1.0

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def content_hash(self) -> str:
        """Hash of the vectors and seen items (the manifest keeps it; loading checks it)."""
        return hash_arrays(
            self.user_vecs, self.item_vecs, self.seen.indptr.astype(np.int64), self.seen.indices
        )

    def save(self, path: str | Path) -> Path:
        """Write the bundle folder at ``path`` atomically (replacing one that is there)."""
        path = Path(path)
        manifest = {
            **self.manifest,
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "n_users": self.n_users,
            "n_items": self.n_items,
            "dim": int(self.item_vecs.shape[1]),
            "content_hash": self.content_hash(),
        }
        with atomic_path(path) as tmp:
            tmp.mkdir()
            save_file(
                {
                    "user_vecs": self.user_vecs,
                    "item_vecs": self.item_vecs,
                    "seen_indptr": self.seen.indptr.astype(np.int64),
                    "seen_items": self.seen.indices.astype(np.int64),
                },
                str(tmp / VECTORS),
            )
            pd.DataFrame({"raw_id": self.user_ids.astype(str)}).to_parquet(tmp / USERS)
            pd.DataFrame(
                {"raw_id": self.item_ids.astype(str), "text": self.texts, "image": self.images}
            ).to_parquet(tmp / ITEMS)
            manifest["content"] = None
            if self.content is not None:
                manifest["content"] = self.content.save(tmp / CONTENT)
            write_json(tmp / MANIFEST, manifest)
        self.manifest = manifest
        return path

    @classmethod
    def load(cls, path: str | Path) -> Bundle:
        """Read a bundle folder with its journal of updates replayed; :class:`DataError` when
        it is not one, or is damaged."""
        path = Path(path)
        if not (path / MANIFEST).is_file():
            raise DataError(
                f"{path} is not a serving bundle ({MANIFEST} is missing); write one with "
                "`lmmrec export RUN_DIR BUNDLE`"
            )
        manifest = read_json(path / MANIFEST)
        if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
            raise DataError(
                f"{path / MANIFEST}: format {manifest.get('format')!r} version "
                f"{manifest.get('format_version')!r} is not {FORMAT!r} version {FORMAT_VERSION}; "
                "export the bundle again with this lmmrec"
            )
        try:
            arrays = load_file(str(path / VECTORS))
            users = pd.read_parquet(path / USERS)
            items = pd.read_parquet(path / ITEMS)
        except (OSError, ValueError) as error:
            raise DataError(f"{path}: unreadable bundle file ({error}); export it again") from error
        n_users, n_items = len(users), len(items)
        seen = sp.csr_matrix(
            (
                np.ones(len(arrays["seen_items"]), dtype=np.float32),
                arrays["seen_items"],
                arrays["seen_indptr"],
            ),
            shape=(n_users, n_items),
        )
        bundle = cls(
            user_vecs=arrays["user_vecs"],
            item_vecs=arrays["item_vecs"],
            user_ids=users["raw_id"].to_numpy(),
            item_ids=items["raw_id"].to_numpy(),
            seen=seen,
            texts=items["text"].fillna("").astype(str).tolist(),
            images=[None if v is None or pd.isna(v) else str(v) for v in items["image"]],
            manifest=manifest,
        )
        if bundle.content_hash() != manifest.get("content_hash"):
            raise DataError(
                f"{path / VECTORS}: content hash differs from {MANIFEST}'s; the bundle is damaged "
                "or was edited, export it again"
            )
        if isinstance(manifest.get("content"), dict):
            bundle.content = ContentPart.load(path / CONTENT, manifest["content"])
        return bundle.with_updates(Journal(path).read())

    def with_updates(self, updates: list[Any]) -> Bundle:
        """This bundle with journal ``updates`` replayed (:func:`journal.apply_updates`)."""
        if not updates:
            return self
        merged = apply_updates(
            Catalogue(self.item_ids, self.item_vecs, self.texts, self.images, self.seen), updates
        )
        return Bundle(
            user_vecs=self.user_vecs,
            item_vecs=merged.item_vecs,
            user_ids=self.user_ids,
            item_ids=merged.item_ids,
            seen=merged.seen,
            texts=merged.texts,
            images=merged.images,
            manifest=self.manifest,
            content=self.content,
        )


def load_bundle(path: str | Path) -> Bundle:
    """:meth:`Bundle.load`."""
    return Bundle.load(path)


def export_bundle(
    run_dir: str | Path,
    out_dir: str | Path,
    encoder: str | Path | None = None,
    placement: str = "map",
    place_cold: bool = True,
) -> Path:
    """Write the serving bundle of a finished run (its best checkpoint) to ``out_dir``.

    The run's dataset is loaded once, here, for the id maps, seen items and catalogue; the
    bundle needs neither afterwards. When the run can place new items from content, the
    bundle also holds the item encoder and a content head
    (:func:`lmmrec.serving.content.content_of_run`; ``encoder`` names the spec or saved folder
    that made a frozen or fine-tuned run's features when it cannot be found from them;
    ``placement`` is ``map``, a ridge map fitted on the catalogue, or ``model``, the model's
    own content part). With ``place_cold`` (the default), catalogue items without training
    interactions get their vectors from that head too, as a new item would: the vectors the
    model learned for them were trained, if at all, only as sampled negatives (on the demo shop
    the full ranking's test Recall@20 rises 30 to 53% so; ``docs/evaluation.md``).
    """
    import torch

    from lmmrec.serving.content import content_of_run
    from lmmrec.training.run import PROVENANCE, load_run
    from lmmrec.training.trainer import METRICS

    run_dir = Path(run_dir)
    config, dataset, trainer = load_run(run_dir)
    item_feats = trainer.item_features()
    user_vecs, item_vecs = (v.cpu() for v in trainer.embed(item_feats))
    content, no_content = content_of_run(config, dataset, trainer, encoder, placement, item_feats)
    cold = torch.from_numpy(dataset.cold_items())
    placed = int(cold.sum()) if content is not None and place_cold else 0
    if placed:
        cold_feats = {m: f.cpu()[cold].float() for m, f in item_feats.items()}  # [C, d_m]
        with torch.no_grad():
            item_vecs[cold] = content.head(cold_feats)  # [C, D]
    seen = (dataset.train + dataset.valid + dataset.test).tocsr()
    catalog = dataset.catalog
    texts = catalog.texts if catalog is not None else [""] * dataset.n_items
    images: list[str | None] = [None] * dataset.n_items
    if catalog is not None:
        images = [
            None if p is None else str(p.absolute())
            for p in (catalog.image_path(i) for i in range(dataset.n_items))
        ]
    metrics = read_json(run_dir / METRICS) if (run_dir / METRICS).is_file() else {}
    provenance = read_json(run_dir / PROVENANCE) if (run_dir / PROVENANCE).is_file() else {}
    features = None
    if config.features is not None:
        features = {
            "name": config.features,
            "manifest": dataset.feature_set(config.features).manifest,
        }
    manifest = {
        "model": config.model,
        "model_params": config.model_params,
        "paradigm": config.paradigm,
        "features": features,
        "encoder": None if config.encoder is None else config.encoder.model_dump(mode="json"),
        "dataset": dataset.name,
        "dataset_hash": dataset.content_hash(),
        "run_dir": str(run_dir.absolute()),
        "metrics": {k: metrics.get(k) for k in ("best_epoch", "valid", "test")},
        "trained_with": {k: provenance.get(k) for k in ("lmmrec", "torch", "device", "precision")},
        "exported_with": lmmrec.__version__,
        "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "no_content": no_content,
        "cold_items": {"count": int(cold.sum()), "placed_by_content": placed},
    }
    bundle = Bundle(
        user_vecs=user_vecs.detach().cpu().numpy(),
        item_vecs=item_vecs.detach().cpu().numpy(),
        user_ids=dataset.user_ids,
        item_ids=dataset.item_ids,
        seen=seen,
        texts=list(texts),
        images=images,
        manifest=manifest,
        content=content,
    )
    return bundle.save(out_dir)
