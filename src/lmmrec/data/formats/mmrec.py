"""MMRec dataset folders (``enoche/MMRec``, ``data/<name>/``), read and written.

A folder holds::

    <name>.inter       tab-separated, header with userID, itemID, x_label (0 train, 1 valid,
                       2 test); other columns (rating, timestamp ...) are ignored
    i_id_mapping.csv   optional, tab-separated: asin, itemID     (raw id of each item index)
    u_id_mapping.csv   optional, tab-separated: user_id, userID  (raw id of each user index)
    image_feat.npy     optional [n_items, d_image] float; row i = item i
    text_feat.npy      optional [n_items, d_text] float

The ids in ``.inter`` are already indices: they must run over ``0..n-1`` with none absent (an id
map, when present, lists every index once and may also cover indices without interactions). The
split is the file's own ``x_label``; the features become one feature set called ``"mmrec"``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lmmrec.data.dataset import Dataset
from lmmrec.data.features import FeatureSet
from lmmrec.data.formats.common import read_columns
from lmmrec.errors import DataError, FeatureError
from lmmrec.io import atomic_path, save_npy

USER, ITEM, LABEL = "userID", "itemID", "x_label"
USER_MAP, ITEM_MAP = "u_id_mapping.csv", "i_id_mapping.csv"
USER_RAW, ITEM_RAW = "user_id", "asin"
FEATURE_FILES = {"image": "image_feat.npy", "text": "text_feat.npy"}
FEATURE_SET = "mmrec"
REINDEX_FIX = (
    "re-index the raw ids to 0..n-1 with lmmrec.data.formats.table.read_table, which reads "
    "any user/item table"
)


def read_mmrec(folder: Path, name: str | None = None) -> Dataset:
    """Read an MMRec dataset folder (see the module docstring).

    Args:
        folder: the folder holding ``<name>.inter`` and the optional id maps and features.
        name: the ``.inter`` file's stem and the dataset name; by default the folder's only
            ``.inter`` file, or ``<folder name>.inter`` when there are several.

    Raises:
        DataError: a file is missing or malformed (columns, non-integer or non-contiguous ids,
            ``x_label`` outside 0/1/2, repeated pairs, an empty split).
        FeatureError: a feature file is unreadable, has the wrong number of rows, or NaN/inf.
    """
    folder = Path(folder)
    inter_path = find_inter_file(folder, name)
    frame = read_columns(
        inter_path,
        (USER, ITEM, LABEL),
        dtype=dict.fromkeys((USER, ITEM, LABEL), np.int64),
        sep="\t",
        fix=f"an MMRec .inter file is tab-separated with a header naming {USER}, "
        f"{ITEM} and {LABEL}",
    )
    if frame.empty:
        raise DataError(f"{inter_path}: no interactions below the header line")
    users, items, labels = (frame[c].to_numpy() for c in (USER, ITEM, LABEL))
    _check_labels(inter_path, labels)
    user_ids = _raw_ids(folder / USER_MAP, USER_RAW, USER, users, inter_path)
    item_ids = _raw_ids(folder / ITEM_MAP, ITEM_RAW, ITEM, items, inter_path)
    _check_unique_pairs(inter_path, users, items, len(item_ids))
    dataset = Dataset.from_interactions(
        users,
        items,
        labels,
        name=name or inter_path.stem,
        where=str(inter_path),
        n_users=len(user_ids),
        n_items=len(item_ids),
        user_ids=user_ids,
        item_ids=item_ids,
        root=folder,
        info={"source": str(inter_path), "format": "mmrec"},
    )
    return add_folder_features(dataset, folder)


def write_mmrec(dataset: Dataset, folder: Path, feature_set: str | None = None) -> None:
    """Write ``dataset`` as an MMRec folder that :func:`read_mmrec` reads back unchanged.

    Writes ``<dataset.name>.inter`` (grouped by user), both id maps and, when ``feature_set``
    names one of the dataset's feature sets, its ``image`` / ``text`` vectors as
    ``image_feat.npy`` / ``text_feat.npy``. Each file is written atomically; other files in
    ``folder`` are left alone. The item catalog (text, images) has no place in the format.

    Raises:
        DataError: the dataset name cannot be a file name.
        FeatureError: ``feature_set`` is unknown or holds modalities other than image and text.
    """
    folder = Path(folder)
    if not dataset.name or Path(dataset.name).name != dataset.name or dataset.name in (".", ".."):
        raise DataError(
            f"dataset name {dataset.name!r} cannot name {folder}/<name>.inter; rename the dataset"
        )
    arrays: dict[str, np.ndarray] = {}
    if feature_set is not None:
        arrays = dataset.feature_set(feature_set).arrays
        unsupported = sorted(set(arrays) - set(FEATURE_FILES))
        if unsupported:
            raise FeatureError(
                f"feature set {feature_set!r} has modalities {unsupported} that the MMRec format "
                f"cannot hold (it stores only {', '.join(FEATURE_FILES)}); export a feature set "
                "with image/text modalities only"
            )
    frame = dataset.interaction_frame().rename(columns={"user": USER, "item": ITEM, "split": LABEL})
    frame = frame.sort_values([USER, LABEL, ITEM], kind="stable")
    tables = {
        f"{dataset.name}.inter": frame,
        USER_MAP: _id_frame(dataset.user_ids, USER_RAW, USER),
        ITEM_MAP: _id_frame(dataset.item_ids, ITEM_RAW, ITEM),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for file_name, table in tables.items():
        with atomic_path(folder / file_name) as tmp:
            table.to_csv(tmp, sep="\t", index=False)
    for modality, array in arrays.items():
        save_npy(folder / FEATURE_FILES[modality], array)


def find_inter_file(folder: Path, name: str | None = None) -> Path:
    """The ``.inter`` file of an MMRec folder: ``<name>.inter``, the only one, or
    ``<folder name>.inter`` among several."""
    if not folder.is_dir():
        raise DataError(
            f"{folder} is not a folder; an MMRec dataset is a folder holding <name>.inter"
        )
    found = sorted(p for p in folder.glob("*.inter") if p.is_file())
    listed = ", ".join(p.name for p in found) or "none"
    if name is not None:
        path = folder / f"{name}.inter"
        if not path.is_file():
            raise DataError(f"{folder} has no {name}.inter (.inter files there: {listed})")
        return path
    if len(found) == 1:
        return found[0]
    preferred = folder / f"{folder.name}.inter"
    if preferred in found:
        return preferred
    if not found:
        raise DataError(
            f"{folder} holds no .inter file; an MMRec folder needs <name>.inter with columns "
            f"{USER}, {ITEM}, {LABEL}"
        )
    raise DataError(
        f"{folder} holds several .inter files ({listed}) and none is {folder.name}.inter; "
        "pass name=<stem> to choose one"
    )


def _check_labels(path: Path, labels: np.ndarray) -> None:
    bad = ~np.isin(labels, (0, 1, 2))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{path}: {LABEL} must be 0 (train), 1 (valid) or 2 (test), but {int(bad.sum())} "
            f"rows hold other values (first: {int(labels[row])} on line {row + 2}); fix the "
            "labels, or re-split the raw interactions with read_table"
        )


def _raw_ids(
    map_path: Path, raw_col: str, id_col: str, ids: np.ndarray, inter_path: Path
) -> np.ndarray:
    """Raw id (string) of every index ``0..n-1`` of ``ids``, from ``map_path`` when it exists.

    Without a map the indices in ``.inter`` must cover ``0..max`` and the raw id is the index.
    """
    if ids.min() < 0:
        raise DataError(
            f"{inter_path}: {id_col} holds negative ids ({int(ids.min())}); {REINDEX_FIX}"
        )
    if not map_path.is_file():
        n = int(ids.max()) + 1
        if n > len(ids):  # more indices than rows: some are absent (and bincount could not fit)
            present = np.unique(ids)
            absent = np.setdiff1d(np.arange(min(n, len(present) + 5)), present)
            n_absent = n - len(present)
        else:
            absent = np.flatnonzero(np.bincount(ids, minlength=n) == 0)
            n_absent = len(absent)
        if n_absent:
            raise DataError(
                f"{inter_path}: {id_col} must run over 0..{n - 1} with none absent, but "
                f"{n_absent} of those ids never occur (first: {absent[:5].tolist()}); "
                f"{REINDEX_FIX}, or add {map_path.name} listing every id"
            )
        return np.arange(n).astype(str)
    frame = read_columns(
        map_path,
        (raw_col, id_col),
        dtype={raw_col: str, id_col: np.int64},
        sep="\t",
        fix=f"an MMRec {map_path.name} is tab-separated with columns {raw_col} and {id_col}",
    )
    index = frame[id_col].to_numpy()
    n = len(frame)
    counts = np.bincount(index[(index >= 0) & (index < n)], minlength=n)
    if n == 0 or (counts != 1).any():
        raise DataError(
            f"{map_path}: {id_col} must list every index 0..{n - 1} exactly once, but "
            f"{int((counts == 0).sum())} are absent and {int((counts > 1).sum())} repeated; "
            "rewrite the map"
        )
    if ids.max() >= n:
        raise DataError(
            f"{inter_path}: {id_col} {int(ids.max())} is not in {map_path.name} (indices "
            f"0..{n - 1}); use the id map written with this .inter file"
        )
    raw = frame[raw_col]
    if raw.isna().any() or raw.duplicated().any():
        raise DataError(
            f"{map_path}: {raw_col} must give every index a distinct raw id, but "
            f"{int(raw.isna().sum())} are empty and {int(raw.duplicated().sum())} repeated; "
            "rewrite the map"
        )
    raw_ids = np.empty(n, dtype=object)
    raw_ids[index] = raw.to_numpy()
    return raw_ids.astype(str)


def _check_unique_pairs(path: Path, users: np.ndarray, items: np.ndarray, n_items: int) -> None:
    n_repeated = len(users) - len(np.unique(users * n_items + items))
    if n_repeated:
        raise DataError(
            f"{path}: {n_repeated} rows repeat an earlier ({USER}, {ITEM}) pair; each pair must "
            "appear once (drop the repeats, or read the raw interactions with read_table, which "
            "keeps the earliest)"
        )


def add_folder_features(dataset: Dataset, folder: Path) -> Dataset:
    """``dataset`` with the folder's MMRec feature files (if any) as a feature set.

    Raises:
        FeatureError: the files do not fit the dataset (named with the folder and files).
    """
    features = read_features(folder)
    if features is not None:
        try:
            dataset.add_feature_set(features)
        except FeatureError as err:
            files = ", ".join(FEATURE_FILES[m] for m in features.modalities)
            raise FeatureError(f"{folder} ({files}): {err}") from err
    return dataset


def read_features(folder: Path) -> FeatureSet | None:
    """The ``image_feat.npy`` / ``text_feat.npy`` present in ``folder`` as one feature set."""
    arrays: dict[str, np.ndarray] = {}
    for modality, file_name in FEATURE_FILES.items():
        path = folder / file_name
        if not path.is_file():
            continue
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise FeatureError(
                f"{path}: cannot be read as a numeric .npy array ({err}); re-save it with "
                "numpy.save"
            ) from err
        if array.dtype.kind not in "fiu":
            raise FeatureError(
                f"{path}: features must be numbers, found dtype {array.dtype}; re-save them as "
                "float32"
            )
        arrays[modality] = array.astype(np.float32, copy=False)
    if not arrays:
        return None
    return FeatureSet(
        name=FEATURE_SET,
        arrays=arrays,
        manifest={
            "encoder": "mmrec-import",
            "source": {m: str(folder / FEATURE_FILES[m]) for m in arrays},
        },
    )


def _id_frame(raw_ids: np.ndarray, raw_col: str, id_col: str) -> pd.DataFrame:
    return pd.DataFrame({raw_col: raw_ids, id_col: np.arange(len(raw_ids), dtype=np.int64)})
