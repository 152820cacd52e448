"""Item content (texts, images) attached to an MMRec folder, joined through its id map.

An MMRec folder (:mod:`lmmrec.data.formats.mmrec`) holds interactions, id maps and precomputed
features, but no item texts or images, so nothing can be encoded, fine-tuned or trained
end-to-end on it. :func:`attach_items` joins an items table (CSV, TSV, Parquet) or an Amazon
metadata file (2014, 2018, 2023; :func:`~lmmrec.data.formats.amazon.read_item_metadata`) to the
folder's items through ``i_id_mapping.csv`` (raw id -> item index) and writes the lmmrec dataset
files into the folder itself, beside the MMRec files, which stay untouched::

    dataset.json, interactions.parquet, items.parquet, users.parquet   (Dataset.save)
    item_urls.parquet                                                  (image URLs, if any)

``load_dataset(folder)`` then reads interactions and id maps as before and the catalog from
``items.parquet``; ``image_feat.npy`` / ``text_feat.npy`` stay the only copy of the ``mmrec``
feature set. ``dataset.json`` records a hash of the ``.inter`` file and the id maps: if they
change later, loading stops and asks for the content to be attached again, rather than pair
texts with the wrong items. ``lmmrec data images``, ``lmmrec encode`` and training work on the
folder like on any dataset folder.

Running :func:`attach_items` again replaces the content with the new source's, and keeps every
image already downloaded into ``images/`` whose URL has not changed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lmmrec.data.catalog import ItemCatalog
from lmmrec.data.dataset import Dataset
from lmmrec.data.formats.common import TABLE_SUFFIXES, check_table_suffix, read_columns
from lmmrec.data.formats.mmrec import (
    FEATURE_SET,
    ITEM_MAP,
    ITEM_RAW,
    USER_MAP,
    add_folder_features,
    find_inter_file,
    read_mmrec,
)
from lmmrec.data.formats.table import id_strings
from lmmrec.errors import DataError
from lmmrec.io import hash_file, read_json

logger = logging.getLogger(__name__)

SourceKind = Literal["table", "amazon"]
MMREC_FILES = "mmrec_files"  # dataset.json info key: hashes of the MMRec files at attach time
_URL_PREFIXES = ("http://", "https://")


@dataclass
class AttachReport:
    """What :func:`attach_items` did.

    Attributes:
        folder: the MMRec folder.
        source: the items table or metadata file.
        kind: ``"table"`` or ``"amazon"``.
        n_items: items of the folder.
        unmatched: raw ids of the folder's items with no row or record in ``source``, in item
            order.
        with_text, with_image_url, with_image_file: items given a text, an image URL, a local
            image path.
        missing_image_files: local image paths (tables) that do not exist (kept; the encoders'
            missing-image policy applies).
        kept_images: images downloaded by an earlier run, kept because their URL is unchanged.
        other_rows: rows or records of ``source`` for items the folder does not have.
        dataset: the dataset as :func:`~lmmrec.data.loading.load_dataset` now reads it.
    """

    folder: Path
    source: Path
    kind: SourceKind
    n_items: int
    unmatched: list[str]
    with_text: int
    with_image_url: int
    with_image_file: int
    missing_image_files: int
    kept_images: int
    other_rows: int
    dataset: Dataset = field(repr=False)

    @property
    def matched(self) -> int:
        return self.n_items - len(self.unmatched)

    def summary(self) -> dict[str, Any]:
        """The counts (and the first unmatched ids) as stored in ``dataset.info["content"]``."""
        return {
            "source": str(self.source),
            "kind": self.kind,
            "items": self.n_items,
            "matched": self.matched,
            "unmatched": len(self.unmatched),
            "unmatched_first": self.unmatched[:20],
            "with_text": self.with_text,
            "with_image_url": self.with_image_url,
            "with_image_file": self.with_image_file,
            "missing_image_files": self.missing_image_files,
            "kept_images": self.kept_images,
            "other_rows": self.other_rows,
        }


@dataclass
class _Content:
    texts: list[str]
    urls: list[str | None]
    paths: list[str | None]
    found: np.ndarray
    other_rows: int
    other_ids: list[str]


def attach_items(
    folder: Path,
    items: Path,
    *,
    id_column: str | None = None,
    text_columns: Sequence[str] | None = None,
    image_column: str | None = None,
    name: str | None = None,
) -> AttachReport:
    """Attach item texts and images from ``items`` to the MMRec folder ``folder``.

    Args:
        folder: an MMRec folder (``<name>.inter``, normally with ``i_id_mapping.csv``).
        items: an items table (``.csv``, ``.tsv``, ``.parquet``: one row per item), or any other
            file read as Amazon metadata (``meta_*.json(.gz)`` of 2014, 2018 or 2023 JSONL).
        id_column: the column (table) or record key (metadata) holding the raw item id, as in
            ``i_id_mapping.csv``; default ``asin`` for tables, ``parent_asin`` / ``asin`` for
            metadata.
        text_columns: table columns joined (by spaces) into the item text, default ``text`` if
            the table has it; for metadata the fields joined (default title, brand,
            categories, description, cleaned as by ``lmmrec data amazon``).
        image_column: table column of image URLs (``http(s)://``) or paths (relative to the
            table's folder), default ``image`` if the table has it; for metadata the key of the
            image URLs (default: each release's own).
        name: the ``.inter`` file's stem, when the folder holds several.

    Returns:
        An :class:`AttachReport`; its ``dataset`` has the catalog (and ``item_urls.parquet``
        holds the URLs for ``lmmrec data images``).

    Raises:
        DataError: the folder or the source is unreadable, a named column is missing, ids repeat
            in a table, or no item of the folder is found in the source.
    """
    # imported here: load_dataset imports this module, and should not pay for httpx
    from lmmrec.data.formats.amazon import DEFAULT_TEXT_FIELDS, read_item_metadata
    from lmmrec.data.images import write_image_urls

    folder, items = Path(folder), Path(items)
    hashes = _mmrec_file_hashes(folder, find_inter_file(folder, name))  # before reading them
    dataset = read_mmrec(folder, name)
    item_ids = dataset.item_ids
    if items.suffix.lower() in TABLE_SUFFIXES:
        kind: SourceKind = "table"
        content = _read_table_content(items, item_ids, id_column, text_columns, image_column)
    else:
        kind = "amazon"
        metadata = read_item_metadata(
            items,
            item_ids,
            DEFAULT_TEXT_FIELDS if text_columns is None else text_columns,
            id_key=id_column,
            image_key=image_column,
        )
        n = len(item_ids)
        content = _Content(
            metadata.texts,
            metadata.urls,
            [None] * n,
            metadata.found,
            metadata.other_records,
            metadata.other_ids,
        )
    if not content.found.any():
        raise DataError(_nothing_matched(folder, items, item_ids, content.other_ids, id_column))
    images, kept = _keep_downloaded(folder, item_ids, content)
    unmatched = item_ids[~content.found].tolist()
    n_paths = sum(p is not None for p in content.paths)
    report = AttachReport(
        folder=folder,
        source=items,
        kind=kind,
        n_items=len(item_ids),
        unmatched=unmatched,
        with_text=sum(bool(t) for t in content.texts),
        with_image_url=sum(u is not None for u in content.urls),
        with_image_file=n_paths,
        missing_image_files=sum(p is not None and not Path(p).is_file() for p in content.paths),
        kept_images=kept,
        other_rows=content.other_rows,
        dataset=dataset,
    )
    dataset.catalog = ItemCatalog(texts=content.texts, images=images, root=folder)
    dataset.info = {
        **dataset.info,
        "content": report.summary(),
        MMREC_FILES: hashes,
    }
    mmrec_features = dataset.features.pop(FEATURE_SET, None)  # the .npy files stay the only copy
    dataset.save(folder)
    # the URLs after the catalog: if interrupted between the two, the catalog refers only to
    # images whose URL is unchanged, so a rerun (which compares with these URLs) stays right
    write_image_urls(folder, item_ids, content.urls)
    if mmrec_features is not None:
        dataset.features[FEATURE_SET] = mmrec_features
    return report


def is_attached_mmrec(folder: Path) -> bool:
    """Whether ``folder`` is an MMRec folder that :func:`attach_items` gave content to."""
    meta_path = Path(folder) / "dataset.json"
    if not meta_path.is_file() or not any(p.is_file() for p in Path(folder).glob("*.inter")):
        return False
    meta = read_json(meta_path)
    return isinstance(meta, dict) and MMREC_FILES in (meta.get("info") or {})


def load_attached_mmrec(folder: Path) -> Dataset:
    """Read an MMRec folder with attached content: :meth:`Dataset.load` plus the ``mmrec``
    feature set from ``image_feat.npy`` / ``text_feat.npy``.

    Raises:
        DataError: the ``.inter`` file or an id map changed (or appeared, or went) after the
            content was attached; attaching again fixes it.
    """
    folder = Path(folder)
    info = read_json(folder / "dataset.json").get("info") or {}
    recorded = info[MMREC_FILES]
    inters = [n for n in recorded if n.endswith(".inter")] if isinstance(recorded, dict) else []
    inter = inters[0] if inters else None
    if inter is None:
        raise DataError(
            f"{folder / 'dataset.json'}: info.{MMREC_FILES} must map the .inter file and id maps "
            f"to their hashes, found {recorded!r}; attach the item content again (lmmrec data "
            "attach-items), or delete dataset.json to read the folder as plain MMRec"
        )
    current = _mmrec_file_hashes(folder, folder / inter)
    changed = sorted(set(recorded.items()) ^ set(current.items()))
    if changed:
        source = (info.get("content") or {}).get("source", "ITEMS")
        raise DataError(
            f"{folder / changed[0][0]} changed after item content was attached to {folder}, so "
            "texts and images may no longer match their items; attach them again: lmmrec data "
            f"attach-items {folder} --items {source}"
        )
    return add_folder_features(Dataset.load(folder), folder)


def _mmrec_file_hashes(folder: Path, inter: Path) -> dict[str, str]:
    """Content hashes of the files the interactions and id maps are read from."""
    paths = [inter, folder / ITEM_MAP, folder / USER_MAP]
    return {path.name: hash_file(path) for path in paths if path.is_file()}


def _read_table_content(
    path: Path,
    item_ids: np.ndarray,
    id_column: str | None,
    text_columns: Sequence[str] | None,
    image_column: str | None,
) -> _Content:
    """Texts, URLs and local image paths of ``item_ids`` from an items table."""
    found_columns = _table_columns(path)
    key = id_column or ITEM_RAW
    texts_cols = list(text_columns) if text_columns is not None else []
    if text_columns is None and "text" in found_columns:
        texts_cols = ["text"]
    image_col = image_column
    if image_column is None and "image" in found_columns:
        image_col = "image"
    if not texts_cols and image_col is None:
        raise DataError(
            f"{path}: no content column chosen (found: {', '.join(map(repr, found_columns))}); "
            "name them with --text-columns (comma-separated) and --image-column"
        )
    columns = list(dict.fromkeys([key, *texts_cols, *([image_col] if image_col else [])]))
    table = read_columns(
        path,
        columns,
        dtype=dict.fromkeys(columns, str),
        fix="pass --id-column, --text-columns and --image-column naming the table's columns",
    )
    table = table[table[key].notna()]
    raw = pd.Index(id_strings(table[key]))
    if raw.has_duplicates:
        repeated = raw[raw.duplicated()].unique()
        raise DataError(
            f"{path}: {len(repeated)} item ids appear in several rows of {key!r} (first: "
            f"{repeated[:3].tolist()}); keep one row per item"
        )
    table.index = raw
    found = pd.Index(item_ids).isin(raw)
    other = raw[~raw.isin(item_ids)]
    table = table.reindex(item_ids)
    parts = [table[c].map(_as_text).to_numpy() for c in texts_cols]
    texts = [" ".join(p for p in row if p) for row in zip(*parts, strict=True)] if parts else []
    texts = texts or [""] * len(item_ids)
    urls: list[str | None] = [None] * len(item_ids)
    paths: list[str | None] = [None] * len(item_ids)
    if image_col is not None:
        for i, value in enumerate(table[image_col].map(_as_text).tolist()):
            if value.startswith(_URL_PREFIXES):
                urls[i] = value
            elif value:
                image = Path(value).expanduser()
                paths[i] = str(image if image.is_absolute() else (path.parent / image).resolve())
    return _Content(texts, urls, paths, np.asarray(found), len(other), other[:3].tolist())


def _table_columns(path: Path) -> list[str]:
    """The column names in a table file's header."""
    suffix = check_table_suffix(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist or is not a file")
    try:
        if suffix == ".parquet":
            return list(pq.read_schema(path).names)
        sep = "\t" if suffix == ".tsv" else ","
        return [str(c) for c in pd.read_csv(path, sep=sep, nrows=0).columns]
    except (pa.ArrowException, OSError, ValueError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read the table's header ({err}); re-export it") from err


def _as_text(value: Any) -> str:
    """A table cell as stripped text: ``""`` for empty cells, lists joined by spaces."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, (list, tuple, np.ndarray)):
        return " ".join(_as_text(v) for v in value if _as_text(v))
    return str(value).strip()


def _keep_downloaded(
    folder: Path, item_ids: np.ndarray, content: _Content
) -> tuple[list[str | None], int]:
    """Catalog image references: the table's local paths, else an image an earlier run stored
    in ``images/`` for the same URL (so attaching again does not undo downloads)."""
    images = list(content.paths)
    previous = _previous_images(folder)
    kept = 0
    for i, raw in enumerate(item_ids.tolist()):
        url = content.urls[i]
        if images[i] is not None or url is None or raw not in previous:
            continue
        ref, old_url = previous[raw]
        if old_url == url and (folder / ref).is_file():
            images[i] = ref
            kept += 1
    return images, kept


def _previous_images(folder: Path) -> dict[str, tuple[str, str | None]]:
    """raw id -> (stored image reference, its URL) of the folder's current catalog."""
    from lmmrec.data.images import STORE, URLS_FILE

    items_path, urls_path = folder / "items.parquet", folder / URLS_FILE
    if not items_path.is_file() or not urls_path.is_file():
        return {}
    try:
        items = pd.read_parquet(items_path, columns=["raw_id", "image"])
        urls = pd.read_parquet(urls_path, columns=["raw_id", "image_url"])
    except (OSError, ValueError, KeyError) as err:  # an unreadable earlier state: start afresh
        logger.warning("not reusing stored images of %s (%s)", folder, err)
        return {}
    url_of = dict(zip(urls["raw_id"].astype(str), urls["image_url"], strict=True))
    return {
        str(raw): (str(ref), url_of.get(str(raw)))
        for raw, ref in zip(items["raw_id"], items["image"], strict=True)
        if isinstance(ref, str) and Path(ref).parts[:1] == (STORE,)
    }


def _nothing_matched(
    folder: Path, items: Path, item_ids: np.ndarray, other_ids: list[str], id_column: str | None
) -> str:
    ours = ", ".join(item_ids[:3].tolist())
    where = f"{ITEM_MAP}" if (folder / ITEM_MAP).is_file() else f"the indices (no {ITEM_MAP} there)"
    theirs = f" (its ids look like {', '.join(other_ids)})" if other_ids else ""
    option = f"--id-column {id_column}" if id_column else "--id-column"
    return (
        f"{items}: none of the {len(item_ids)} items of {folder} (raw ids from {where}, e.g. "
        f"{ours}) has a row or record there{theirs}; name the id column with {option}, or use "
        "the metadata of the same category and release as the folder"
    )
