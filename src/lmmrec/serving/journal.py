"""Items added or updated through the service, persisted as an append-only journal in the bundle.

Every acknowledged write is one file, ``<bundle>/updates/<sequence>.safetensors``: the ``[n, D]``
float32 vectors of its ``n`` items, with their raw ids, texts and image references in the file's
metadata (JSON strings) and a content hash of the vectors. A file is written under a temporary
name, flushed and ``fsync``-ed, renamed to its final name, and the folder is ``fsync``-ed; only
then is the write acknowledged. A crash leaves either the whole file or none of it (temporaries
are removed on the next load), so nothing acknowledged is lost, and no reader or restart sees half
of a write. One process at a time writes to a bundle: the first write takes an exclusive lock on
``updates/.lock`` (``flock``, released when the process ends), and a second writer is refused
instead of numbering its files over the first one's. Readers of the same folder need no lock.

:meth:`Journal.apply` replays the files in sequence order onto a loaded bundle: an id already in
the bundle gets its row replaced, a new id is appended (row order = order of first appearance).
Saving the bundle again (:meth:`Bundle.save`) folds the journal into its arrays.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from safetensors.numpy import load, save

from lmmrec.errors import DataError
from lmmrec.io import hash_arrays

try:  # POSIX; elsewhere a second writer is not detected
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

UPDATES = "updates"
LOCK = ".lock"
FORMAT = "lmmrec-bundle-update"
SUFFIX = ".safetensors"


@dataclass(frozen=True)
class Update:
    """One acknowledged write: ``n`` items' raw ids, ``[n, D]`` vectors, texts and images."""

    ids: list[str]
    vectors: np.ndarray
    texts: list[str]
    images: list[str | None]


class Journal:
    """The ``updates/`` folder of a bundle.

    Args:
        bundle_dir: the bundle folder.
    """

    def __init__(self, bundle_dir: Path) -> None:
        self.bundle_dir = Path(bundle_dir)
        self.folder = self.bundle_dir / UPDATES
        self.next = 1 + max((self._sequence(p) for p in self._files()), default=0)
        self._lock: int | None = None  # the writer's lock file, held from its first write

    def _files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if p.name[0].isdigit())

    @staticmethod
    def _sequence(path: Path) -> int:
        return int(path.name.split(".")[0])

    def append(self, update: Update) -> Path:
        """Write ``update`` durably (module doc); returns its file.

        Raises:
            DataError: another process writes to this bundle.
        """
        if not self.folder.is_dir():
            self.folder.mkdir()
            _fsync_dir(self.bundle_dir)
        if self._lock is None:
            self._lock = self._take_lock()
            # a writer that held the lock before may have written since this journal opened
            self.next = max(self.next, 1 + max(map(self._sequence, self._files()), default=0))
        metadata = {
            "format": FORMAT,
            "ids": json.dumps(update.ids),
            "texts": json.dumps(update.texts),
            "images": json.dumps(update.images),
            "hash": hash_arrays(update.vectors),
        }
        data = save({"vectors": np.ascontiguousarray(update.vectors, np.float32)}, metadata)
        final = self.folder / f"{self.next:012d}{SUFFIX}"
        tmp = self.folder / f".{final.name}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        _fsync_dir(self.folder)
        self.next += 1
        return final

    def _take_lock(self) -> int:
        """The open, exclusively locked ``updates/.lock`` (module doc)."""
        fd = os.open(self.folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise DataError(
                    f"{self.folder}: another process is writing to this bundle; send writes to "
                    "that server (one writer per bundle), or stop it first"
                ) from None
        return fd

    def close(self) -> None:
        """Let another process write (the lock is taken again by this journal's next write)."""
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor releases its flock
            self._lock = None

    def read(self) -> list[Update]:
        """Every acknowledged update, in order; leftovers of interrupted writes are removed.

        Raises:
            DataError: a journal file is not one this module wrote, or was altered.
        """
        if self.folder.is_dir():
            for leftover in self.folder.glob(".*.tmp"):
                leftover.unlink()
        return [self._read(path) for path in self._files()]

    @staticmethod
    def _read(path: Path) -> Update:
        fix = "restore it from a backup, or delete it (its items are then lost)"
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="np") as fh:
                metadata = fh.metadata() or {}
            vectors = load(path.read_bytes())["vectors"]
            update = Update(
                ids=json.loads(metadata["ids"]),
                vectors=vectors,
                texts=json.loads(metadata["texts"]),
                images=json.loads(metadata["images"]),
            )
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as error:
            raise DataError(f"{path}: unreadable bundle update ({error}); {fix}") from None
        sizes = {len(update.ids), len(update.texts), len(update.images), len(vectors)}
        if metadata.get("format") != FORMAT or len(sizes) != 1:
            raise DataError(f"{path}: not an lmmrec bundle update; {fix}")
        if hash_arrays(vectors) != metadata.get("hash"):
            raise DataError(f"{path}: vectors differ from their recorded hash; {fix}")
        return update


@dataclass
class Catalogue:
    """The item side of a bundle that writes change: ids, vectors, texts, images, seen matrix."""

    item_ids: np.ndarray
    item_vecs: np.ndarray
    texts: list[str]
    images: list[str | None]
    seen: sp.csr_matrix


def apply_updates(catalogue: Catalogue, updates: Sequence[Update]) -> Catalogue:
    """``catalogue`` with ``updates`` replayed in order (module doc); the input is not changed."""
    if not updates:
        return catalogue
    index = {raw: i for i, raw in enumerate(catalogue.item_ids.tolist())}
    texts, images = list(catalogue.texts), list(catalogue.images)
    ids = list(catalogue.item_ids.tolist())
    rows: list[np.ndarray] = []  # appended vectors
    width = catalogue.item_vecs.shape[1]
    replaced: dict[int, np.ndarray] = {}
    for update in updates:
        if update.vectors.shape[1] != width:
            raise DataError(
                f"a bundle update holds {update.vectors.shape[1]}-d vectors, the bundle "
                f"{width}-d ones; it belongs to another bundle: delete its updates/ folder"
            )
        for raw, vector, text, image in zip(
            update.ids, update.vectors, update.texts, update.images, strict=True
        ):
            row = index.get(raw)
            if row is None:
                row = index[raw] = len(ids)
                ids.append(raw)
                texts.append(text)
                images.append(image)
                rows.append(vector)
            else:
                texts[row], images[row] = text, image
                if row >= len(catalogue.item_ids):
                    rows[row - len(catalogue.item_ids)] = vector
                else:
                    replaced[row] = vector
    vectors = np.concatenate([catalogue.item_vecs, np.asarray(rows, np.float32).reshape(-1, width)])
    if replaced:
        vectors[list(replaced)] = np.stack(list(replaced.values()))
    seen = catalogue.seen
    seen = sp.csr_matrix((seen.data, seen.indices, seen.indptr), shape=(seen.shape[0], len(ids)))
    return Catalogue(np.asarray(ids, dtype=object), vectors, texts, images, seen)


def _fsync_dir(folder: Path) -> None:
    """Make a rename or a new entry in ``folder`` durable (a no-op where directories cannot be
    opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
