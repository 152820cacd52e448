"""Reading named columns of CSV, TSV and Parquet files, with errors a user can act on.

Every problem (missing file, missing columns, a value that is not an integer, a file pandas or
pyarrow cannot parse) becomes a :class:`DataError` that names the file and says how to fix it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lmmrec.errors import DataError

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet")
_INTEGER = r"\s*[+-]?\d+\s*"
_INT64_MAX = np.iinfo(np.int64).max


def check_table_suffix(path: Path) -> str:
    """The lower-case suffix of ``path`` if it is a supported table (``.csv/.tsv/.parquet``)."""
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DataError(
            f"{path}: unsupported table file {suffix or '(no suffix)'!r}; "
            f"use one of {', '.join(TABLE_SUFFIXES)}"
        )
    return suffix


def read_columns(
    path: Path,
    columns: Sequence[str],
    *,
    dtype: Mapping[str, Any] | None = None,
    sep: str | None = None,
    fix: str = "",
) -> pd.DataFrame:
    """Read only ``columns`` of a table file, in that order.

    Args:
        path: a ``.csv``, ``.tsv`` or ``.parquet`` file; with ``sep`` given, any delimited text
            file (MMRec's tab-separated ``.inter`` and ``.csv`` files).
        columns: the columns needed; others in the file are not parsed.
        dtype: column -> dtype for delimited text (the C parser converts while reading);
            Parquet columns keep their stored types.
        sep: field delimiter; by default ``,`` for ``.csv`` and a tab for ``.tsv``.
        fix: appended to the missing-column message, saying how to point at the right columns.

    Raises:
        DataError: the file is missing or unreadable, lacks a column, or an integer column holds
            something else (the first offending value and its line are quoted).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist or is not a file")
    columns = list(columns)
    if sep is None and check_table_suffix(path) == ".parquet":
        try:
            found = pq.read_schema(path).names
            _check_columns(path, columns, found, fix)
            return pd.read_parquet(path, columns=columns)
        except (pa.ArrowException, OSError) as err:
            raise DataError(f"{path}: cannot be read as Parquet ({err}); re-export it") from err
    sep = sep or ("\t" if path.suffix.lower() == ".tsv" else ",")
    try:
        found = list(pd.read_csv(path, sep=sep, nrows=0, engine="c").columns)
        _check_columns(path, columns, found, fix)
        return pd.read_csv(path, sep=sep, usecols=columns, dtype=dtype, engine="c")
    except pd.errors.EmptyDataError as err:
        raise DataError(f"{path} is empty; it needs a header row naming its columns") from err
    except pd.errors.ParserError as err:
        raise DataError(
            f"{path}: cannot be parsed as {_sep_name(sep)}-separated text ({err}); check the "
            "delimiter, quoting and the number of fields in each line"
        ) from err
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err}); re-save it as UTF-8") from err
    except (ValueError, OverflowError) as err:  # a value the C parser could not convert
        integer_columns = [c for c, t in (dtype or {}).items() if np.dtype(t).kind in "iu"]
        raise _non_integer_error(path, sep, integer_columns) or DataError(
            f"{path}: cannot read columns {columns} ({err})"
        ) from err


def _check_columns(path: Path, needed: Sequence[str], found: Sequence[str], fix: str) -> None:
    missing = [c for c in needed if c not in found]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(map(repr, missing))} "
            f"(found: {', '.join(map(repr, found)) or 'none'})" + (f"; {fix}" if fix else "")
        )


def _non_integer_error(path: Path, sep: str, columns: Sequence[str]) -> DataError | None:
    """The error for the first non-integer value in ``columns``, or ``None`` if there is none."""
    raw = pd.read_csv(path, sep=sep, usecols=list(columns), dtype=str, keep_default_na=False)
    for column in columns:
        bad = ~raw[column].str.fullmatch(_INTEGER)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            return DataError(
                f"{path}: column {column!r} must hold integers, but {int(bad.sum())} values do "
                f"not (first: {raw[column].iloc[row]!r} on line {row + 2}); fix or drop those rows"
            )
        large = _beyond_int64(raw[column])
        if large.any():
            row = int(np.flatnonzero(large)[0])
            first = raw[column].iloc[row].strip()
            return DataError(
                f"{path}: column {column!r} holds {int(large.sum())} value(s) too large for a "
                f"64-bit integer (first: {first!r} on line {row + 2}; the limit is "
                f"{_INT64_MAX}); ids this long are raw ids, not indices: re-index them to "
                "0..n-1, or fix those rows"
            )
    return None


def _beyond_int64(values: pd.Series) -> np.ndarray:
    """``[N]`` bool: which integer strings lie outside int64 (compared as digit strings)."""
    digits = values.str.strip().str.lstrip("+-").str.lstrip("0")
    length = digits.str.len().to_numpy()
    limit = str(_INT64_MAX)
    return (length > len(limit)) | ((length == len(limit)) & (digits > limit).to_numpy())


def _sep_name(sep: str) -> str:
    return {"\t": "tab", ",": "comma"}.get(sep, repr(sep))
