"""Amazon review dumps (the 2014, 2018 and 2023 releases), streamed into a split :class:`Dataset`.

Releases and the fields read (gzip or plain text, recognised by the gzip magic bytes):

* 2014, McAuley et al., SIGIR 2015 (https://jmcauley.ucsd.edu/data/amazon/links.html): ratings-only
  CSV ``user,item,rating,timestamp`` without a header, or reviews as JSON lines with
  ``reviewerID``, ``asin``, ``overall``, ``unixReviewTime`` (seconds). Metadata has one *Python
  dict literal* per line (``asin``, ``title``, ``brand``, ``categories``: a list of category
  paths, ``description``, ``imUrl``); it is parsed with :func:`ast.literal_eval`, never ``eval``.
* 2018, Ni et al., EMNLP 2019 (https://nijianmo.github.io/amazon/): reviews with the 2014 keys;
  ratings-only CSV ``item,user,rating,timestamp`` (note the order); metadata as JSON lines with
  ``asin``, ``title``, ``brand``, ``category`` (list), ``description`` (list or string) and the URL
  lists ``imageURLHighRes`` / ``image`` / ``imageURL``.
* 2023, Hou et al., 2024 (https://amazon-reviews-2023.github.io/): reviews with ``user_id``,
  ``parent_asin``, ``rating``, ``timestamp`` (milliseconds); the benchmark CSVs carry the header
  ``user_id,parent_asin,rating,timestamp``. Metadata: ``parent_asin``, ``title``, ``store``,
  ``categories``, ``description`` (list), ``images`` (dicts with ``large``, ``hi_res``, ``thumb``).

Reviews are read line by line; only compact columns are kept (ids factorised chunk by chunk into
int32 codes, float32 ratings, int64 times), so a dump of many GB never has to fit in memory. The
steps then follow MMRec (``preprocessing/0rating2inter.ipynb``, ``1splitting.ipynb``) and
:func:`lmmrec.data.formats.table.read_table`, so both readers give the same dataset for the same
interactions: drop reviews without user, item or time (MMRec's ``dropna``), keep ratings
``>= min_rating``, keep each (user, item) pair once (the earliest), iterative k-core, re-index raw
ids in sorted order, split per user (:func:`lmmrec.data.splits.make_split`).

Item text follows MMRec ``preprocessing/3feat-encoder.ipynb``: title, brand, the first category
path and the description joined by spaces; lmmrec also unescapes HTML entities, strips tags and
collapses whitespace. Metadata lines of items that did not survive filtering are skipped before
parsing (their id is found with a regular expression), so large metadata files read quickly.
"""

from __future__ import annotations

import ast
import contextlib
import gzip
import html
import json
import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
import pandas as pd

from lmmrec.data.catalog import ItemCatalog
from lmmrec.data.dataset import Dataset
from lmmrec.data.formats.mmrec import write_mmrec
from lmmrec.data.images import write_image_urls
from lmmrec.data.prepare import prepare_interactions
from lmmrec.data.splits import SplitKind
from lmmrec.errors import DataError

Release = Literal["2014", "2018", "2023"]
Version = Literal["auto", "2014", "2018", "2023"]
RELEASES: tuple[Release, ...] = ("2014", "2018", "2023")
DEFAULT_TEXT_FIELDS = ("title", "brand", "categories", "description")

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 100_000  # reviews converted to compact columns at a time
# (user, item, rating, time) keys of a review record, per release
_REVIEW_KEYS: dict[Release, tuple[str, str, str, str]] = {
    "2014": ("reviewerID", "asin", "overall", "unixReviewTime"),
    "2018": ("reviewerID", "asin", "overall", "unixReviewTime"),
    "2023": ("user_id", "parent_asin", "rating", "timestamp"),
}
# column names of the header-less ratings-only CSVs; the 2023 CSVs name their columns
_CSV_NAMES: dict[Release, tuple[str, str, str, str]] = {
    "2014": ("user", "item", "rating", "time"),
    "2018": ("item", "user", "rating", "time"),
}
# metadata keys that only the 2018 release uses (tells a 2018 ratings CSV from a 2014 one)
_KEYS_2018 = frozenset({"category", "main_cat", "rank", "also_buy", "also_view", "imageURLHighRes"})
# template field -> metadata keys tried in turn (the releases name brand and categories differently)
_FIELD_KEYS = {"brand": ("brand", "store"), "categories": ("categories", "category")}
# image URL keys, best first: 2018 high-res, 2023 image dicts, 2014, 2018 thumbnails
_IMAGE_KEYS = ("imageURLHighRes", "images", "imUrl", "image", "imageURL")
# in 2023 image dicts "large" (about 500 px) comes first: enough for 224-px encoders, and smaller
# to download than "hi_res"
_IMAGE_SIZES = ("large", "hi_res", "thumb")
_META_ID = re.compile(rb"""["'](?:parent_)?asin["']\s*:\s*["']([^"']+)["']""")
_TAG = re.compile(r"<!--.*?-->|</?[A-Za-z][^<>]*>", re.DOTALL)
_SPACE = re.compile(r"\s+")


@dataclass
class AmazonData:
    """A dataset read from an Amazon dump, with each item's image URL.

    Attributes:
        dataset: interactions, split, id maps and (with metadata) the item catalog's texts; the
            catalog has no images until :func:`lmmrec.data.images.download_images` stores them.
        image_urls: row ``i`` is item ``i``'s image URL, ``None`` where the metadata has none.
    """

    dataset: Dataset
    image_urls: list[str | None]

    def save(self, root: Path, mmrec: Path | None = None) -> None:
        """Write the dataset folder ``root`` with its ``item_urls.parquet``; with ``mmrec``, also
        an MMRec folder there (:func:`~lmmrec.data.formats.mmrec.write_mmrec`)."""
        root = Path(root)
        self.dataset.save(root)
        write_image_urls(root, self.dataset.item_ids, self.image_urls)
        if mmrec is not None:
            write_mmrec(self.dataset, Path(mmrec))


@dataclass
class _Reviews:
    """Compact review columns, ``[N]`` each, with the raw id of every code."""

    users: np.ndarray  # int32 codes
    items: np.ndarray  # int32 codes
    ratings: np.ndarray  # float32, NaN where absent
    times: np.ndarray  # int64, as in the file (seconds; milliseconds in 2023)
    user_raw: np.ndarray
    item_raw: np.ndarray
    records: int  # records read
    incomplete: int  # records without a user, item or time


class _Codes:
    """Raw ids factorised incrementally into int32 codes, in order of first appearance."""

    def __init__(self) -> None:
        self.index: dict[Any, int] = {}

    def encode(self, values: Sequence[Any] | np.ndarray) -> np.ndarray:
        local, uniques = pd.factorize(np.asarray(values, dtype=object))
        index = self.index
        codes = np.fromiter(
            (index.setdefault(u, len(index)) for u in uniques), dtype=np.int32, count=len(uniques)
        )
        return codes[local]

    def raw(self) -> np.ndarray:
        return np.asarray([str(k) for k in self.index], dtype=object)


class _Accumulator:
    """Collects review columns chunk by chunk (see :class:`_Reviews`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.users, self.items = _Codes(), _Codes()
        self.parts: list[tuple[np.ndarray, ...]] = []
        self.records = 0
        self.incomplete = 0

    def add(self, users: Sequence[Any], items: Sequence[Any], ratings: Any, times: Any) -> None:
        if len(users) == 0:
            return
        try:
            ratings = np.asarray(ratings, dtype=np.float64).astype(np.float32)
            times = np.asarray(times, dtype=np.float64).astype(np.int64)
        except (TypeError, ValueError) as err:
            raise DataError(
                f"{self.path}: a rating or time is not a number ({err}); check the file's release "
                "(version=...) and its columns"
            ) from err
        self.parts.append((self.users.encode(users), self.items.encode(items), ratings, times))

    def result(self) -> _Reviews:
        columns = [np.concatenate(column) for column in zip(*self.parts, strict=True)]
        if not columns:
            raise DataError(
                f"{self.path}: none of its {self.records} records has a user, an item and a time; "
                "check the release (version=2014, 2018 or 2023) and that this is a reviews file"
            )
        return _Reviews(*columns, self.users.raw(), self.items.raw(), self.records, self.incomplete)


@contextlib.contextmanager
def open_binary(path: Path) -> Iterator[BinaryIO]:
    """``path`` opened for reading bytes, decompressed if it starts with the gzip magic bytes."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist or is not a file")
    with open(path, "rb") as raw:
        compressed = raw.read(2) == _GZIP_MAGIC
    with gzip.open(path, "rb") if compressed else open(path, "rb") as handle:
        yield handle  # type: ignore[misc]


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """Non-blank lines of ``path`` with their 1-based line numbers."""
    try:
        with open_binary(path) as handle:
            for number, line in enumerate(handle, 1):
                if not line.isspace():
                    yield number, line
    except (EOFError, OSError, zlib.error) as err:
        raise DataError(
            f"{path}: cannot be read to the end ({err}); the file may be truncated, download it "
            "again"
        ) from err


def _first_line(path: Path) -> tuple[int, bytes]:
    with contextlib.closing(_lines(path)) as lines:
        first = next(lines, None)
    if first is None:
        raise DataError(f"{path} is empty")
    return first


def parse_record(line: bytes, path: Path, number: int) -> dict[str, Any]:
    """One record: JSON, or (2014 metadata) a Python dict literal read by ``ast.literal_eval``."""
    try:
        record = json.loads(line)
    except ValueError:
        try:
            record = ast.literal_eval(line.decode("utf-8").strip())
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as err:
            raise DataError(
                f"{path}, line {number}: neither JSON nor a Python literal ({err}); each line must "
                "hold one record {...}; a broken line usually means a damaged download"
            ) from err
    if not isinstance(record, dict):
        raise DataError(
            f"{path}, line {number}: expected one record {{...}} per line, found a "
            f"{type(record).__name__}"
        )
    return record


def detect_version(reviews: Path, meta: Path | None = None) -> Release:
    """The release of a reviews file, from its first record (and the metadata's, for CSVs).

    JSON reviews with ``user_id`` are 2023; with ``reviewerID`` 2018 if they carry ``verified``,
    else 2014. A CSV naming ``parent_asin`` in its header is 2023; a header-less CSV is 2018 if the
    metadata uses 2018 keys (its columns are item, user, ...), else 2014.
    """
    number, line = _first_line(reviews)
    if line.lstrip().startswith(b"{"):
        record = parse_record(line, reviews, number)
        if "user_id" in record:
            return "2023"
        if "reviewerID" in record:
            return "2018" if "verified" in record else "2014"
        raise DataError(
            f"{reviews}: the first record has none of the review keys of the 2014, 2018 or 2023 "
            f"release (it has: {', '.join(sorted(record)[:12])}); check the file or pass version="
        )
    if b"parent_asin" in line:
        return "2023"
    if meta is not None:
        meta_number, meta_line = _first_line(meta)
        if parse_record(meta_line, meta, meta_number).keys() & _KEYS_2018:
            return "2018"
    return "2014"


def _read_reviews(path: Path, release: Release) -> _Reviews:
    """Stream the reviews file (JSON lines or CSV) into compact columns."""
    accumulator = _Accumulator(path)
    _, first = _first_line(path)
    if first.lstrip().startswith(b"{"):
        _read_json_reviews(path, _REVIEW_KEYS[release], accumulator)
    else:
        _read_csv_reviews(path, release, accumulator)
    return accumulator.result()


def _read_json_reviews(
    path: Path, keys: tuple[str, str, str, str], accumulator: _Accumulator
) -> None:
    user_key, item_key, rating_key, time_key = keys
    batch: tuple[list[Any], ...] = ([], [], [], [])
    users, items, ratings, times = batch
    for number, line in _lines(path):
        record = parse_record(line, path, number)
        accumulator.records += 1
        user, item, time = record.get(user_key), record.get(item_key), record.get(time_key)
        if user is None or item is None or time is None:
            accumulator.incomplete += 1
            continue
        users.append(user)
        items.append(item)
        ratings.append(record.get(rating_key))
        times.append(time)
        if len(users) == _CHUNK:
            accumulator.add(*batch)
            batch = ([], [], [], [])
            users, items, ratings, times = batch
    accumulator.add(*batch)


def _read_csv_reviews(path: Path, release: Release, accumulator: _Accumulator) -> None:
    if release == "2023":
        names, keys = None, _REVIEW_KEYS["2023"]
    else:
        names, keys = list(_CSV_NAMES[release]), ("user", "item", "rating", "time")
    user_key, item_key, rating_key, time_key = keys
    try:
        with open_binary(path) as handle:
            chunks = pd.read_csv(
                handle,
                header=0 if names is None else None,
                names=names,
                usecols=list(keys),
                dtype={user_key: str, item_key: str},
                chunksize=_CHUNK,
                engine="c",
            )
            for chunk in chunks:
                accumulator.records += len(chunk)
                complete = chunk[[user_key, item_key, time_key]].notna().all(axis=1)
                accumulator.incomplete += int((~complete).sum())
                chunk = chunk[complete]
                accumulator.add(
                    chunk[user_key].to_numpy(),
                    chunk[item_key].to_numpy(),
                    chunk[rating_key].to_numpy(),
                    chunk[time_key].to_numpy(),
                )
    except (pd.errors.ParserError, ValueError) as err:
        raise DataError(
            f"{path}: cannot be read as a {release} ratings CSV ({err}); expected columns "
            f"{','.join(names or keys)}; pass version=... if it is another release"
        ) from err
    except (EOFError, OSError, zlib.error) as err:
        raise DataError(
            f"{path}: cannot be read to the end ({err}); the file may be truncated, download it "
            "again"
        ) from err


def clean_text(text: str) -> str:
    """``text`` with HTML entities unescaped, tags removed and whitespace collapsed."""
    return _SPACE.sub(" ", _TAG.sub(" ", html.unescape(text))).strip()


def _flatten(value: Any) -> str:
    """A metadata value as text: lists joined by spaces, dicts as ``key: value``."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return " ".join(f"{k}: {_flatten(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return " ".join(_flatten(v) for v in value)
    return str(value)


def item_text(record: dict[str, Any], fields: Sequence[str] = DEFAULT_TEXT_FIELDS) -> str:
    """The text of one metadata record: ``fields`` cleaned and joined by spaces.

    ``brand`` falls back to the 2023 ``store``; ``categories`` to the 2018 ``category``, and of
    the 2014 list of category paths only the first is used, as MMRec does. Any other name is a
    metadata key (``feature``, ``features``, ``details`` ...); absent fields are skipped.
    """
    parts = []
    for field in fields:
        keys = _FIELD_KEYS.get(field, (field,))
        value = next((record[k] for k in keys if record.get(k) is not None), None)
        if field == "categories" and isinstance(value, list) and value:
            value = value[0] if isinstance(value[0], list) else value
        parts.append(clean_text(_flatten(value)))
    return " ".join(part for part in parts if part)


def _first_url(value: Any) -> str | None:
    if isinstance(value, str):
        return value if value.startswith(("http://", "https://")) else None
    if isinstance(value, dict):
        value = [value.get(size) for size in _IMAGE_SIZES]
    if isinstance(value, list):
        return next((url for v in value if (url := _first_url(v)) is not None), None)
    return None


def image_url(record: dict[str, Any]) -> str | None:
    """The main image URL of one metadata record (any release), or ``None``."""
    return next(
        (url for key in _IMAGE_KEYS if (url := _first_url(record.get(key))) is not None), None
    )


@dataclass
class ItemMetadata:
    """Texts and image URLs of a list of items, read from a metadata file.

    Attributes:
        texts: row ``i`` is item ``i``'s text (:func:`item_text`), ``""`` without a record.
        urls: row ``i`` is item ``i``'s image URL, ``None`` where there is none.
        found: ``[n_items]`` bool, whether item ``i`` has a record (the first one counts).
        other_records: records of items not in the list (or repeats), skipped.
        other_ids: a few ids of such records, to show what the file's ids look like.
    """

    texts: list[str]
    urls: list[str | None]
    found: np.ndarray
    other_records: int
    other_ids: list[str]


def _id_pattern(key: str | None) -> re.Pattern[bytes]:
    if key is None:
        return _META_ID
    return re.compile(rb"""["']""" + re.escape(key.encode()) + rb"""["']\s*:\s*["']([^"']+)["']""")


def read_item_metadata(
    path: Path,
    item_ids: np.ndarray | Sequence[str],
    fields: Sequence[str] = DEFAULT_TEXT_FIELDS,
    *,
    id_key: str | None = None,
    image_key: str | None = None,
) -> ItemMetadata:
    """Stream a metadata file (any release, gzip or plain) for the items ``item_ids``.

    Args:
        path: metadata as JSON lines (2018, 2023) or Python dict literals (2014).
        item_ids: raw ids, row ``i`` = item ``i``.
        fields: metadata fields joined into each item's text (:func:`item_text`).
        id_key: the record key holding the item id; default ``parent_asin``, else ``asin``.
        image_key: the record key holding image URLs; default the releases' keys in turn
            (:func:`image_url`).

    Lines of other items are skipped before parsing when their id is found by a regular
    expression, so a large file is read quickly.
    """
    position = {raw: i for i, raw in enumerate(np.asarray(item_ids).tolist())}
    texts: list[str] = [""] * len(position)
    urls: list[str | None] = [None] * len(position)
    seen = np.zeros(len(position), dtype=bool)
    pattern = _id_pattern(id_key)
    other, other_ids = 0, []
    for number, line in _lines(path):
        ids = pattern.findall(line)
        if ids and not any(i.decode("utf-8", "replace") in position for i in ids):
            other += 1  # an item filtered out or not in the list: skip without parsing
            if len(other_ids) < 3:
                other_ids.append(ids[0].decode("utf-8", "replace"))
            continue
        record = parse_record(line, path, number)
        raw = record.get(id_key) if id_key else record.get("parent_asin", record.get("asin"))
        i = position.get(str(raw)) if raw is not None else None
        if i is None or seen[i]:  # unknown item, or a repeated record (the first one counts)
            other += 1
            if raw is not None and i is None and len(other_ids) < 3:
                other_ids.append(str(raw))
            continue
        seen[i] = True
        texts[i] = item_text(record, fields)
        urls[i] = image_url(record) if image_key is None else _first_url(record.get(image_key))
    return ItemMetadata(texts, urls, seen, other, other_ids)


def _dataset_name(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".jsonl", ".json", ".csv"):
        name = name.removesuffix(suffix)
    return name or "amazon"


def read_amazon(
    reviews: Path,
    meta: Path | None = None,
    *,
    version: Version = "auto",
    k_core: int = 5,
    min_rating: float | None = None,
    split: SplitKind = "random",
    seed: int = 2022,
    text_fields: Sequence[str] = DEFAULT_TEXT_FIELDS,
    name: str | None = None,
) -> AmazonData:
    """Read an Amazon reviews (or ratings) file and optionally its metadata into a dataset.

    Args:
        reviews: reviews as JSON lines, or a ratings-only CSV; gzip or plain.
        meta: the metadata file of the same category (JSON lines or, for 2014, Python literals);
            gives the item texts and image URLs.
        version: the release; ``"auto"`` detects it (:func:`detect_version`).
        k_core: every kept user and item has at least this many interactions (``<= 1``: none
            removed). MMRec and the paper use 5.
        min_rating: keep only reviews rated at least this (before removing repeats); ``None``
            keeps all.
        split: ``"random"`` (MMRec's per-user 8:1:1), ``"temporal"`` or ``"loo"``.
        seed: seeds the random and leave-one-out splits.
        text_fields: metadata fields joined into the item text (see :func:`item_text`).
        name: dataset name; by default the reviews file's name without suffixes.

    Returns:
        The dataset (``info["statistics"]`` counts what each step removed) and the image URLs.

    Raises:
        DataError: an unreadable or truncated file, a line that is neither JSON nor a literal,
            an unknown release, nothing left after filtering, or an empty split.
    """
    reviews = Path(reviews)
    where = str(reviews)
    if version != "auto" and version not in RELEASES:
        raise DataError(f"unknown Amazon release {version!r}; use auto, {', '.join(RELEASES)}")
    release = detect_version(reviews, meta) if version == "auto" else version
    data = _read_reviews(reviews, release)
    users, items, times = data.users, data.items, data.times
    below = 0
    if min_rating is not None:
        rated = data.ratings >= min_rating
        below = int((~rated).sum())
        users, items, times = users[rated], items[rated], times[rated]
    prepared = prepare_interactions(
        users,
        items,
        times,
        data.user_raw,
        data.item_raw,
        k_core=k_core,
        split=split,
        seed=seed,
        where=where,
    )
    item_ids = prepared.item_ids
    catalog, urls, with_meta = None, [None] * len(item_ids), 0
    if meta is not None:
        found = read_item_metadata(Path(meta), item_ids, text_fields)
        texts, urls, with_meta = found.texts, found.urls, int(found.found.sum())
        catalog = ItemCatalog(texts=texts, images=[None] * len(item_ids))
    statistics = {
        "records_read": data.records,
        "records_without_user_item_or_time": data.incomplete,
        "below_min_rating": below,
        **prepared.counts,
        "items_with_metadata": with_meta,
        "items_with_text": 0 if catalog is None else sum(bool(t) for t in catalog.texts),
        "items_with_image_url": sum(url is not None for url in urls),
    }
    info = {
        "source": where,
        "meta_source": None if meta is None else str(meta),
        "format": "amazon",
        "release": release,
        "k_core": k_core,
        "min_rating": min_rating,
        "split": split,
        "seed": seed,
        "text_fields": list(text_fields),
        "statistics": statistics,
    }
    dataset = Dataset.from_interactions(
        prepared.users,
        prepared.items,
        prepared.labels,
        name=name or _dataset_name(reviews),
        where=where,
        n_users=len(prepared.user_ids),
        n_items=len(item_ids),
        user_ids=prepared.user_ids,
        item_ids=item_ids,
        catalog=catalog,
        info=info,
    )
    return AmazonData(dataset=dataset, image_urls=urls)
