"""Generic interaction tables (CSV, TSV or Parquet) with an optional items table of content.

The interaction table has one row per (user, item) event, with raw ids of any form and optionally
a time column. The items table (CSV, TSV or Parquet) maps an item's raw id to its text and image
path; relative image paths are resolved against the items table's folder.

:func:`read_table` turns them into a :class:`Dataset` in fixed steps: drop rows without a user or
item, keep each (user, item) pair once (the earliest by time, else the first in the file),
iterative k-core, re-index raw ids to ``0..n-1`` in sorted order (deterministic), split per user,
and attach the item catalog in item-index order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lmmrec.data.catalog import ItemCatalog
from lmmrec.data.dataset import Dataset
from lmmrec.data.formats.common import check_table_suffix, read_columns
from lmmrec.data.prepare import prepare_interactions
from lmmrec.data.splits import SplitKind
from lmmrec.errors import DataError


def read_table(
    path: Path,
    *,
    user_col: str = "user",
    item_col: str = "item",
    time_col: str | None = None,
    items_path: Path | None = None,
    item_key: str | None = None,
    text_col: str | None = "text",
    image_col: str | None = "image",
    k_core: int = 5,
    split: SplitKind = "random",
    seed: int = 2022,
    name: str | None = None,
) -> Dataset:
    """Read an interaction table (and optionally an items table) into a split :class:`Dataset`.

    Args:
        path: interactions, ``.csv``, ``.tsv`` or ``.parquet``.
        user_col, item_col: columns holding the raw user and item ids.
        time_col: column of timestamps (numbers or date strings); needed by the temporal split,
            and used to keep the earliest of repeated pairs and to order leave-one-out.
        items_path: optional items table (``.csv``, ``.tsv`` or ``.parquet``).
        item_key: column of the items table holding the item raw id; default ``item_col``.
        text_col, image_col: items-table columns of text and image path; ``None`` when the table
            has no such column. Items absent from the table get empty text and no image.
        k_core: every kept user and item has at least this many interactions (``<= 1``: no
            filtering).
        split: ``"random"`` (MMRec 8:1:1 per user), ``"temporal"`` or ``"loo"``.
        seed: seeds the random and leave-one-out splits.
        name: dataset name; default the file's stem.

    Raises:
        DataError: unsupported suffix, missing columns or files, unparseable values, nothing
            left after filtering, or an empty split.
    """
    path = Path(path)
    where = str(path)
    check_table_suffix(path)
    id_cols = [user_col, item_col]
    frame = read_columns(
        path,
        [*id_cols, *([time_col] if time_col else [])],
        dtype=dict.fromkeys(id_cols, str),
        fix="pass user_col=, item_col= (and time_col=) naming the table's columns",
    )
    n_rows = len(frame)
    frame = frame[frame[user_col].notna() & frame[item_col].notna()]
    if frame.empty:
        raise DataError(
            f"{where}: none of its {n_rows} rows has both a {user_col!r} and an {item_col!r} value"
        )
    user_codes, user_raw = pd.factorize(id_strings(frame[user_col]), sort=True)
    item_codes, item_raw = pd.factorize(id_strings(frame[item_col]), sort=True)
    times = _timestamps(path, frame[time_col]) if time_col else None

    prepared = prepare_interactions(
        user_codes,
        item_codes,
        times,
        user_raw,
        item_raw,
        k_core=k_core,
        split=split,
        seed=seed,
        where=where,
    )
    item_ids = prepared.item_ids
    catalog, n_without_content = None, None
    if items_path is not None:
        catalog, n_without_content = _read_catalog(
            Path(items_path), item_key or item_col, text_col, image_col, item_ids
        )
    info = {
        "source": where,
        "items_source": None if items_path is None else str(items_path),
        "k_core": k_core,
        "split": split,
        "seed": seed,
        "time_col": time_col,
        "rows_read": n_rows,
        "rows_without_ids": n_rows - len(frame),
        **prepared.counts,
        "items_without_content": n_without_content,
    }
    return Dataset.from_interactions(
        prepared.users,
        prepared.items,
        prepared.labels,
        name=name or path.stem,
        where=where,
        n_users=len(prepared.user_ids),
        n_items=len(item_ids),
        user_ids=prepared.user_ids,
        item_ids=item_ids,
        catalog=catalog,
        root=path.parent,
        info=info,
    )


def id_strings(values: pd.Series) -> np.ndarray:
    """Raw ids as strings; whole floats (Parquet integer columns with gaps) drop their ``.0``."""
    if values.dtype.kind == "f" and (values == values.round()).all():
        values = values.astype(np.int64)
    return values.astype(str).to_numpy()


def _timestamps(path: Path, values: pd.Series) -> np.ndarray:
    """``[N]`` sortable times: numbers as they are, dates and date strings as int64 ns (UTC)."""
    if values.isna().any():
        raise DataError(
            f"{path}: time column {values.name!r} is empty in {int(values.isna().sum())} rows; "
            "fill or drop them"
        )
    if values.dtype.kind in "iuf":
        return values.to_numpy()
    try:
        dates = pd.to_datetime(values, utc=True)
    except (ValueError, TypeError) as err:
        raise DataError(
            f"{path}: time column {values.name!r} holds neither numbers nor dates ({err}); "
            "convert it to Unix seconds or ISO 8601 dates"
        ) from err
    return dates.dt.tz_localize(None).to_numpy("datetime64[ns]").astype(np.int64)


def _read_catalog(
    path: Path, key: str, text_col: str | None, image_col: str | None, item_ids: np.ndarray
) -> tuple[ItemCatalog, int]:
    """The catalog of ``item_ids`` (in that order) and how many of them the table lacks."""
    check_table_suffix(path)
    content = {"text": text_col, "image": image_col}
    columns = [key, *(c for c in content.values() if c is not None)]
    table = read_columns(
        path,
        columns,
        dtype=dict.fromkeys(columns, str),
        fix="pass item_key=, text_col=, image_col= naming the items table's columns "
        "(text_col=None or image_col=None when it has no such column)",
    )
    table = table[table[key].notna()]
    raw = pd.Index(id_strings(table[key]))
    if raw.has_duplicates:
        repeated = raw[raw.duplicated()].unique()
        raise DataError(
            f"{path}: {len(repeated)} item ids appear in several rows (first: "
            f"{repeated[:3].tolist()}); keep one row per item"
        )
    table.index = raw
    table = table.reindex(item_ids)
    n_without_content = int((~pd.Index(item_ids).isin(raw)).sum())
    frame = pd.DataFrame(
        {standard: table[column].to_numpy() for standard, column in content.items() if column},
        index=range(len(item_ids)),
    )
    return ItemCatalog.from_frame(frame, root=path.parent.resolve()), n_without_content
