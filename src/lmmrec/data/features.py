"""Feature sets: stored item vectors per modality, plus the manifest saying where they came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lmmrec.errors import FeatureError
from lmmrec.io import atomic_path, hash_arrays, read_json, write_json

if TYPE_CHECKING:
    import torch

MANIFEST = "manifest.json"


@dataclass
class FeatureSet:
    """Item vectors per modality: ``arrays[modality]`` is ``[n_items, d_modality]`` float32.

    Row ``i`` is item index ``i``. ``manifest`` records provenance (encoder, weights hash,
    preprocessing, item-order hash ...); see ``docs/architecture.md``.
    """

    name: str
    arrays: dict[str, np.ndarray]
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def modalities(self) -> list[str]:
        return list(self.arrays)

    @property
    def dims(self) -> dict[str, int]:
        return {m: int(a.shape[1]) for m, a in self.arrays.items()}

    def validate(self, n_items: int, where: str) -> None:
        """Raise :class:`FeatureError` unless every array is finite and ``[n_items, d]``."""
        if not self.arrays:
            raise FeatureError(f"feature set {self.name!r} ({where}) holds no modality")
        for modality, array in self.arrays.items():
            if array.ndim != 2 or array.shape[0] != n_items:
                raise FeatureError(
                    f"{where}: {modality} features have shape {tuple(array.shape)} but the "
                    f"dataset has {n_items} items; row i must be item i "
                    "(re-extract the features for this dataset)"
                )
            bad = ~np.isfinite(array).all(axis=1)
            if bad.any():
                first = np.flatnonzero(bad)[:5].tolist()
                raise FeatureError(
                    f"{where}: {modality} features have NaN/inf in {int(bad.sum())} rows "
                    f"(first items {first}); re-extract them or impute those rows"
                )

    def content_hash(self) -> str:
        """Hash of the vectors themselves: caches derived from features are keyed by it."""
        return hash_arrays(*(self.arrays[m] for m in sorted(self.arrays)))

    def to_tensors(self, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        import torch  # lazily: data commands should not pay for importing torch

        return {m: torch.from_numpy(a).to(device) for m, a in self.arrays.items()}

    def save(self, folder: Path) -> None:
        """Write ``<modality>.npy`` files and ``manifest.json`` into ``folder``, atomically."""
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            for modality, array in self.arrays.items():
                np.save(tmp / f"{modality}.npy", array, allow_pickle=False)
            write_json(tmp / MANIFEST, {**self.manifest, "name": self.name, "dims": self.dims})

    @classmethod
    def load(cls, folder: Path) -> FeatureSet:
        manifest_path = folder / MANIFEST
        if not manifest_path.is_file():
            raise FeatureError(f"{folder} is not a feature set: {MANIFEST} is missing")
        manifest = read_json(manifest_path)
        arrays = {
            m: np.load(folder / f"{m}.npy", allow_pickle=False).astype(np.float32, copy=False)
            for m in manifest["dims"]
        }
        return cls(name=manifest.get("name", folder.name), arrays=arrays, manifest=manifest)
