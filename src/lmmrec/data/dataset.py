"""The :class:`Dataset`: users x items interactions split into train/valid/test, plus content.

The on-disk format (a folder) is described in ``docs/data-formats.md``::

    dataset.json          name, sizes, provenance
    interactions.parquet  user, item, split (0 train, 1 valid, 2 test)
    items.parquet         raw_id, text, image   (row i = item i)
    users.parquet         raw_id                (row u = user u)
    features/<name>/      one feature set per folder (see FeatureSet)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from lmmrec.data.catalog import ItemCatalog
from lmmrec.data.features import FeatureSet
from lmmrec.data.splits import SPLIT_NAMES, TEST, TRAIN, VALID
from lmmrec.errors import DataError, FeatureError
from lmmrec.io import atomic_path, hash_arrays, read_json, write_json

FORMAT = "lmmrec-dataset"
FORMAT_VERSION = 1


def _as_indices(values: np.ndarray, what: str, where: str) -> np.ndarray:
    """``values`` as an int64 array; :class:`DataError` if any value is not a whole number.

    A plain ``astype`` would silently truncate ``1.5`` to ``1`` or wrap ``256`` to ``0`` in int8.
    """
    array = np.asarray(values)
    if array.dtype.kind in "iub":
        return array.astype(np.int64, copy=False)
    if array.dtype.kind == "f" and np.isfinite(array).all() and (array == np.round(array)).all():
        return array.astype(np.int64)
    raise DataError(f"{where}: {what} values must be whole numbers, got dtype {array.dtype}")


def _csr(users: np.ndarray, items: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """Binary ``[U, I]`` CSR matrix with sorted column indices and duplicates merged."""
    matrix = sp.csr_matrix(
        (np.ones(len(users), dtype=np.float32), (users, items)), shape=shape, dtype=np.float32
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


@dataclass
class Dataset:
    """Interactions of ``n_users`` users with ``n_items`` items, split for training and evaluation.

    Attributes:
        name: short name used in run directories and reports.
        n_users, n_items: sizes; indices are ``0..n-1``.
        train, valid, test: binary ``[n_users, n_items]`` CSR matrices.
        user_ids, item_ids: raw id (string) of every index, for mapping at the edges.
        catalog: item text and images, when the source has them.
        features: named feature sets (``FeatureSet``), each ``[n_items, d]`` per modality.
        root: the folder the dataset was read from, if any.
    """

    name: str
    n_users: int
    n_items: int
    train: sp.csr_matrix
    valid: sp.csr_matrix
    test: sp.csr_matrix
    user_ids: np.ndarray
    item_ids: np.ndarray
    catalog: ItemCatalog | None = None
    features: dict[str, FeatureSet] = field(default_factory=dict)
    root: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_interactions(
        cls,
        users: np.ndarray,
        items: np.ndarray,
        labels: np.ndarray,
        *,
        name: str,
        where: str,
        n_users: int | None = None,
        n_items: int | None = None,
        user_ids: np.ndarray | None = None,
        item_ids: np.ndarray | None = None,
        catalog: ItemCatalog | None = None,
        root: Path | None = None,
        info: dict[str, Any] | None = None,
    ) -> Dataset:
        """Build from parallel ``[N]`` arrays of user index, item index and split label.

        Valid/test interactions of users who have no training interaction are dropped with a
        warning that counts them, as MMRec does: such users cannot be ranked from a profile.

        Raises:
            DataError: when indices are negative or out of range, or a split ends up empty.
        """
        users = _as_indices(users, "user", where)
        items = _as_indices(items, "item", where)
        labels = _as_indices(labels, "split label", where)
        if not len(users) == len(items) == len(labels):
            raise DataError(
                f"{where}: got {len(users)} users, {len(items)} items and {len(labels)} split "
                "labels; give one of each per interaction"
            )
        if len(users) == 0:
            raise DataError(f"{where}: no interactions")
        n_users = int(users.max()) + 1 if n_users is None else n_users
        n_items = int(items.max()) + 1 if n_items is None else n_items
        for what, ids, n in (("user", users, n_users), ("item", items, n_items)):
            if ids.min() < 0 or ids.max() >= n:
                raise DataError(
                    f"{where}: {what} indices must lie in 0..{n - 1}, found "
                    f"{int(ids.min())}..{int(ids.max())}"
                )
        if not np.isin(labels, (TRAIN, VALID, TEST)).all():
            raise DataError(f"{where}: split labels must be 0 (train), 1 (valid) or 2 (test)")
        labels = labels.astype(np.int8)
        has_train = np.zeros(n_users, dtype=bool)
        has_train[users[labels == TRAIN]] = True
        cold = (labels != TRAIN) & ~has_train[users]
        if cold.any():
            n_cold_users = len(np.unique(users[cold]))
            warnings.warn(
                f"{where}: dropped {int(cold.sum())} valid/test interactions of {n_cold_users} "
                "users who have no training interaction",
                stacklevel=2,
            )
            users, items, labels = users[~cold], items[~cold], labels[~cold]
        shape = (n_users, n_items)
        splits = [_csr(users[labels == s], items[labels == s], shape) for s in (TRAIN, VALID, TEST)]
        for split_name, matrix in zip(SPLIT_NAMES, splits, strict=True):
            if matrix.nnz == 0:
                raise DataError(
                    f"{where}: the {split_name} split is empty; every split needs interactions "
                    "(check the split labels or use a split rule that holds some out)"
                )
        user_ids = np.arange(n_users).astype(str) if user_ids is None else np.asarray(user_ids)
        item_ids = np.arange(n_items).astype(str) if item_ids is None else np.asarray(item_ids)
        if len(user_ids) != n_users or len(item_ids) != n_items:
            raise DataError(
                f"{where}: id maps have {len(user_ids)} users / {len(item_ids)} items but the "
                f"interactions need {n_users} / {n_items}"
            )
        if catalog is not None and len(catalog) != n_items:
            raise DataError(f"{where}: item catalog has {len(catalog)} rows, expected {n_items}")
        return cls(
            name=name,
            n_users=n_users,
            n_items=n_items,
            train=splits[0],
            valid=splits[1],
            test=splits[2],
            user_ids=user_ids.astype(str),
            item_ids=item_ids.astype(str),
            catalog=catalog,
            root=root,
            info=dict(info or {}),
        )

    def split(self, name: str) -> sp.csr_matrix:
        """The ``[n_users, n_items]`` matrix of split ``"train"``, ``"valid"`` or ``"test"``."""
        if name not in SPLIT_NAMES:
            raise DataError(f"unknown split {name!r}; use one of {', '.join(SPLIT_NAMES)}")
        return getattr(self, name)

    @property
    def n_interactions(self) -> int:
        return int(self.train.nnz + self.valid.nnz + self.test.nnz)

    def statistics(self) -> dict[str, Any]:
        """Users, items, interactions, sparsity, split sizes and items unseen in training."""
        return {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": self.n_interactions,
            "sparsity": 1.0 - self.n_interactions / (self.n_users * self.n_items),
            "train": int(self.train.nnz),
            "valid": int(self.valid.nnz),
            "test": int(self.test.nnz),
            "valid_users": int(np.count_nonzero(np.diff(self.valid.indptr))),
            "test_users": int(np.count_nonzero(np.diff(self.test.indptr))),
            "items_unseen_in_train": int(np.count_nonzero(self.cold_items())),
            "feature_sets": {name: fs.dims for name, fs in self.features.items()},
            "has_catalog": self.catalog is not None,
        }

    def cold_items(self) -> np.ndarray:
        """``[I]`` bool: the items without a training interaction (only in valid/test)."""
        return np.diff(self.train.tocsc().indptr) == 0

    def content_hash(self) -> str:
        """Hash of the split interactions; caches derived from the data are keyed by it."""
        return hash_arrays(
            *(a for m in (self.train, self.valid, self.test) for a in (m.indptr, m.indices))
        )

    def add_feature_set(self, features: FeatureSet) -> None:
        """Validate ``features`` against ``n_items`` (raises :class:`FeatureError`) and add it."""
        features.validate(self.n_items, where=f"feature set {features.name!r}")
        self.features[features.name] = features

    def feature_set(self, name: str) -> FeatureSet:
        """The feature set called ``name``; raises :class:`FeatureError` listing the known ones."""
        if name not in self.features:
            known = ", ".join(sorted(self.features)) or "none"
            raise FeatureError(
                f"dataset {self.name!r} has no feature set {name!r} (it has: {known}); "
                "extract one with `lmmrec encode` or import MMRec's .npy files"
            )
        return self.features[name]

    def interaction_frame(self) -> pd.DataFrame:
        """All interactions as a frame with columns ``user``, ``item``, ``split``."""
        parts = []
        for label, matrix in ((TRAIN, self.train), (VALID, self.valid), (TEST, self.test)):
            coo = matrix.tocoo()
            parts.append(
                pd.DataFrame(
                    {
                        "user": coo.row.astype(np.int64),
                        "item": coo.col.astype(np.int64),
                        "split": np.full(coo.nnz, label, dtype=np.int8),
                    }
                )
            )
        return pd.concat(parts, ignore_index=True)

    def save(self, root: Path) -> None:
        """Write the dataset folder (see the module docstring), atomically as a whole.

        Image files are not copied. Relative image paths stay relative when the catalog's root is
        ``root``; otherwise they are written as absolute paths, so the saved catalog still finds
        them. Files already in ``root`` that the dataset does not write (images, caches, feature
        sets not loaded in memory) are kept.
        """
        root = Path(root)
        with atomic_path(root) as tmp:
            tmp.mkdir()
            self.interaction_frame().to_parquet(tmp / "interactions.parquet", index=False)
            items = pd.DataFrame({"raw_id": self.item_ids})
            if self.catalog is not None:
                items = pd.concat([items, self.catalog.to_frame(root)], axis=1)
            items.to_parquet(tmp / "items.parquet", index=False)
            pd.DataFrame({"raw_id": self.user_ids}).to_parquet(tmp / "users.parquet", index=False)
            for features in self.features.values():
                features.save(tmp / "features" / features.name)
            write_json(
                tmp / "dataset.json",
                {
                    "format": FORMAT,
                    "version": FORMAT_VERSION,
                    "name": self.name,
                    "n_users": self.n_users,
                    "n_items": self.n_items,
                    "has_catalog": self.catalog is not None,
                    "info": self.info,
                },
            )
            # keep anything else already in the folder (images, caches, other feature sets)
            if root.is_dir():
                old_features = root / "features"
                merge_features = (tmp / "features").is_dir() and old_features.is_dir()
                entries = [*root.iterdir(), *(old_features.iterdir() if merge_features else ())]
                for entry in entries:
                    target = tmp / entry.relative_to(root)
                    if not target.exists():
                        entry.rename(target)
        self.root = root

    @classmethod
    def load(cls, root: Path) -> Dataset:
        """Read a folder written by :meth:`save`."""
        root = Path(root)
        meta_path = root / "dataset.json"
        if not meta_path.is_file():
            raise DataError(f"{root} is not an lmmrec dataset folder: dataset.json is missing")
        meta = read_json(meta_path)
        if meta.get("format") != FORMAT:
            raise DataError(
                f"{meta_path}: 'format' must be {FORMAT!r}, found {meta.get('format')!r}"
            )
        inter = pd.read_parquet(root / "interactions.parquet")
        items = pd.read_parquet(root / "items.parquet")
        users = pd.read_parquet(root / "users.parquet")
        catalog = ItemCatalog.from_frame(items, root=root) if meta.get("has_catalog") else None
        dataset = cls.from_interactions(
            inter["user"].to_numpy(),
            inter["item"].to_numpy(),
            inter["split"].to_numpy(),
            name=meta["name"],
            where=str(root),
            n_users=int(meta["n_users"]),
            n_items=int(meta["n_items"]),
            user_ids=users["raw_id"].to_numpy(),
            item_ids=items["raw_id"].to_numpy(),
            catalog=catalog,
            root=root,
            info=meta.get("info", {}),
        )
        features_dir = root / "features"
        if features_dir.is_dir():
            for folder in sorted(p for p in features_dir.iterdir() if p.is_dir()):
                if not folder.name.startswith("."):
                    dataset.add_feature_set(FeatureSet.load(folder))
        return dataset
