"""The image store of a dataset folder: item images downloaded from URLs or imported from a folder.

Layout inside a dataset folder::

    item_urls.parquet        raw_id, image_url   (written by the Amazon reader; any source may)
    images/<raw id>.<ext>    one verified image per item; ext from the decoded format
    images/manifest.parquet  one row per item: item, raw_id, url, status, http_status, path,
                             width, height, detail

Every image is verified before it is kept: Pillow's ``Image.verify()`` (structure and, for PNG,
checksums), then a full decode with ``Image.load()``, then a minimum width and height (Amazon serves
a 1x1 GIF where an image is missing). Files are written atomically (temp + rename), so the store
never holds half an image. The manifest is rewritten atomically every few seconds and when a run
ends or is interrupted; resuming needs no manifest at all, since files already in the store are
verified again and kept.

The downloader is a bounded pool of worker threads sharing one ``httpx.Client`` (kept-alive
connections), with a per-host request rate. Timeouts, network errors, 408, 429 and 5xx are
retried with exponential back-off and jitter ("equal jitter",
https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/); a ``Retry-After``
header (seconds or an HTTP date, RFC 9110 section 10.2.3) replaces the back-off.

Only items with a verified image get an image reference in the dataset's catalog, so items stay in
place (feature rows never shift) and encoders apply their missing-image policy to the others.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import io
import itertools
import logging
import os
import random
import re
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import httpx
import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from lmmrec.data.catalog import ItemCatalog
from lmmrec.data.dataset import Dataset
from lmmrec.errors import ConfigError, DataError
from lmmrec.io import atomic_path

logger = logging.getLogger(__name__)

STORE = "images"
MANIFEST = "manifest.parquet"
URLS_FILE = "item_urls.parquet"

OK = "ok"  # a verified image is in the store
NO_URL = "no_url"  # the item has no image URL
NO_FILE = "no_file"  # (folder import) the folder has no file for the item
HTTP_ERROR = "http_error"  # the server answered with an error status (see http_status)
TIMEOUT = "timeout"  # no answer within the timeout, on every attempt
ERROR = "error"  # network failure or an unusable URL (see detail)
NOT_IMAGE = "not_image"  # the bytes do not decode as an image
TOO_SMALL = "too_small"  # decodes, but narrower or lower than min_size pixels
STATUSES = (OK, NO_URL, NO_FILE, HTTP_ERROR, TIMEOUT, ERROR, NOT_IMAGE, TOO_SMALL)

USER_AGENT = "lmmrec-image-downloader"
_RETRY_STATUS = frozenset({408, 429})
_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp", "TIFF": ".tif"}
_SAFE_STEM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_MANIFEST_SECONDS = 5.0


@dataclass(frozen=True)
class ImageResult:
    """What happened to one item's image.

    Attributes:
        item: item index.
        status: one of :data:`STATUSES`.
        url: the URL tried, if any.
        path: the stored file relative to the dataset folder (``images/...``) when ``ok``.
        http_status: the last HTTP status for ``http_error``.
        width, height: pixels of the stored image.
        detail: why it failed, for people.
        reused: the image was already in the store (verified again, not downloaded).
    """

    item: int
    status: str
    url: str | None = None
    path: str | None = None
    http_status: int | None = None
    width: int | None = None
    height: int | None = None
    detail: str = ""
    reused: bool = False


@dataclass(frozen=True)
class ImageReport:
    """The outcome of a download or import run.

    Attributes:
        counts: items per status (every item of the dataset has one).
        reused: items whose stored image was verified and kept without a request.
        skipped: items not requested because an earlier run failed for good on the same URL
            (4xx other than 408/429, not an image, too small).
        requests: HTTP requests made, retries included.
        seconds: wall-clock time of the run.
        manifest: the manifest file.
    """

    counts: dict[str, int]
    reused: int
    skipped: int
    requests: int
    seconds: float
    manifest: Path

    @property
    def ok(self) -> int:
        return self.counts.get(OK, 0)


@dataclass(frozen=True)
class _Policy:
    """Download settings (see :func:`download_images`)."""

    workers: int
    per_host_rate: float | None
    retries: int
    timeout: float
    min_size: int
    backoff: float
    max_backoff: float

    def __post_init__(self) -> None:
        checks = {
            "workers": self.workers >= 1,
            "per_host_rate": self.per_host_rate is None or self.per_host_rate > 0,
            "retries": self.retries >= 0,
            "timeout": self.timeout > 0,
            "min_size": self.min_size >= 1,
            "backoff": self.backoff >= 0,
            "max_backoff": self.max_backoff >= 0,
        }
        for name, valid in checks.items():
            if not valid:
                raise ConfigError(
                    f"image download setting {name}={getattr(self, name)!r} is out of range; "
                    "workers, timeout and min_size must be positive, retries and back-offs >= 0, "
                    "per_host_rate positive or None"
                )

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before retry ``attempt + 1``: ``Retry-After`` or jittered back-off."""
        if retry_after is not None:
            return min(retry_after, self.max_backoff)
        cap = min(self.max_backoff, self.backoff * 2**attempt)
        return cap / 2 + random.uniform(0, cap / 2)


class _Rejected(Exception):
    """Bytes that are not a usable image; ``status`` is NOT_IMAGE or TOO_SMALL."""

    def __init__(self, status: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def write_image_urls(root: Path, item_ids: Sequence[str], urls: Sequence[str | None]) -> None:
    """Write ``root/item_urls.parquet`` (``raw_id``, ``image_url``; row ``i`` = item ``i``)."""
    frame = pd.DataFrame({"raw_id": list(item_ids), "image_url": list(urls)})
    with atomic_path(Path(root) / URLS_FILE) as tmp:
        frame.to_parquet(tmp, index=False)


def read_image_urls(root: Path, item_ids: Sequence[str]) -> list[str | None]:
    """The image URL of every item of ``item_ids`` (``None`` where there is none)."""
    path = Path(root) / URLS_FILE
    if not path.is_file():
        raise DataError(
            f"{path} is missing, so the dataset has no image URLs; ingest with metadata "
            "(`lmmrec data amazon --meta ...`), write that file (columns raw_id, image_url), or "
            "import a folder of images with --from-folder"
        )
    frame = pd.read_parquet(path)
    missing = {"raw_id", "image_url"} - set(frame.columns)
    if missing:
        raise DataError(f"{path}: missing column(s) {sorted(missing)}; it needs raw_id, image_url")
    urls = frame.drop_duplicates("raw_id").set_index("raw_id")["image_url"]
    found = urls.reindex(pd.Index(item_ids, dtype=object))
    return [url if isinstance(url, str) and url else None for url in found.tolist()]


def store_stem(raw_id: str) -> str:
    """File name (without extension) of an item's image: the raw id when it is a safe name,
    else a cleaned id plus a hash, so different ids never share a file."""
    if _SAFE_STEM.fullmatch(raw_id):
        return raw_id
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", raw_id)[:80].lstrip("._-")
    return f"{cleaned}-{hashlib.sha1(raw_id.encode()).hexdigest()[:10]}"


def _check_image(data: bytes, min_size: int) -> tuple[str, int, int]:
    """Format, width and height of encoded image ``data``.

    Raises:
        _Rejected: NOT_IMAGE if Pillow cannot verify and decode it, TOO_SMALL if either side is
            below ``min_size`` pixels.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            fmt, (width, height) = image.format or "", image.size
    except Exception as err:  # Pillow raises many exception types on corrupt input
        raise _Rejected(NOT_IMAGE, f"cannot be decoded as an image ({err})") from err
    if min(width, height) < min_size:
        raise _Rejected(TOO_SMALL, f"{width}x{height} pixels, below the minimum of {min_size}")
    return fmt, width, height


def _stored_files(store: Path) -> dict[str, Path]:
    """Image files in the store by stem (temporaries and the manifest left out)."""
    return {
        p.stem: p
        for p in sorted(store.iterdir())
        if p.is_file() and not p.name.startswith(".") and p.name != MANIFEST
    }


class _Store:
    """The ``images/`` folder of one dataset, with its manifest rows."""

    def __init__(self, root: Path, item_ids: np.ndarray, urls: Sequence[str | None]) -> None:
        self.root = root
        self.folder = root / STORE
        self.folder.mkdir(exist_ok=True)
        self.item_ids = item_ids
        self.urls = urls
        self.existing = _stored_files(self.folder)
        self.rows: dict[int, ImageResult] = {}
        self.written = time.monotonic()

    @property
    def manifest(self) -> Path:
        return self.folder / MANIFEST

    def target(self, item: int, fmt: str) -> Path:
        return self.folder / (
            store_stem(self.item_ids[item]) + _EXTENSIONS.get(fmt, f".{fmt.lower()}")
        )

    def ok(self, item: int, path: Path, width: int, height: int, reused: bool) -> ImageResult:
        """Record-ready result for a verified image at ``path``; other files of the item go."""
        stale = self.existing.get(path.stem)
        if stale is not None and stale != path:
            stale.unlink(missing_ok=True)
        return ImageResult(
            item,
            OK,
            self.urls[item],
            path=path.relative_to(self.root).as_posix(),
            width=width,
            height=height,
            reused=reused,
        )

    def reuse(self, item: int, min_size: int) -> ImageResult | None:
        """The item's image already in the store if it verifies; a broken one is deleted."""
        path = self.existing.get(store_stem(self.item_ids[item]))
        if path is None:
            return None
        try:
            _, width, height = _check_image(path.read_bytes(), min_size)
        except _Rejected:
            path.unlink(missing_ok=True)
            return None
        return self.ok(item, path, width, height, reused=True)

    def keep_bytes(self, item: int, data: bytes, min_size: int) -> ImageResult:
        """Verify downloaded ``data`` and store it atomically."""
        try:
            fmt, width, height = _check_image(data, min_size)
        except _Rejected as rejected:
            return ImageResult(item, rejected.status, self.urls[item], detail=rejected.detail)
        path = self.target(item, fmt)
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        return self.ok(item, path, width, height, reused=False)

    def import_file(self, item: int, source: Path | None, copy: bool, min_size: int) -> ImageResult:
        """Verify ``source`` and hard-link (or copy) it into the store atomically; without a
        source, keep the item's image already in the store if it verifies."""
        url = self.urls[item]
        if source is None:
            return self.reuse(item, min_size) or ImageResult(item, NO_FILE, url)
        try:
            fmt, width, height = _check_image(source.read_bytes(), min_size)
        except _Rejected as rejected:
            return ImageResult(item, rejected.status, url, detail=f"{source}: {rejected.detail}")
        except OSError as err:
            return ImageResult(item, ERROR, url, detail=f"{source}: cannot be read ({err})")
        path = self.target(item, fmt)
        with atomic_path(path) as tmp:
            if copy:
                shutil.copyfile(source, tmp)
            else:
                try:
                    os.link(source, tmp)
                except OSError:  # another file system, or links not supported
                    shutil.copyfile(source, tmp)
        return self.ok(item, path, width, height, reused=False)

    def record(self, result: ImageResult) -> None:
        self.rows[result.item] = result
        if time.monotonic() - self.written >= _MANIFEST_SECONDS:
            self.write_manifest()

    def write_manifest(self) -> None:
        rows = [self.rows[i] for i in sorted(self.rows)]

        def ints(values: list[int | None]) -> pd.arrays.IntegerArray:
            return pd.array(values, dtype="Int64")

        frame = pd.DataFrame(
            {
                "item": np.array([r.item for r in rows], dtype=np.int64),
                "raw_id": [self.item_ids[r.item] for r in rows],
                "url": [r.url for r in rows],
                "status": [r.status for r in rows],
                "http_status": ints([r.http_status for r in rows]),
                "path": [r.path for r in rows],
                "width": ints([r.width for r in rows]),
                "height": ints([r.height for r in rows]),
                "detail": [r.detail for r in rows],
            }
        )
        with atomic_path(self.manifest) as tmp:
            frame.to_parquet(tmp, index=False)
        self.written = time.monotonic()

    def final_failures(self) -> dict[int, ImageResult]:
        """Items an earlier run failed on for good, with the URL they still have."""
        if not self.manifest.is_file():
            return {}
        try:
            frame = pd.read_parquet(self.manifest)
        except (OSError, ValueError) as err:
            logger.warning("%s: unreadable (%s); every item is tried again", self.manifest, err)
            return {}
        failures = {}
        for row in frame.itertuples(index=False):
            item, code = int(row.item), None if pd.isna(row.http_status) else int(row.http_status)
            final = row.status in (NOT_IMAGE, TOO_SMALL) or (
                row.status == HTTP_ERROR and code is not None and _final_http_status(code)
            )
            same = item < len(self.urls) and self.item_ids[item] == row.raw_id
            if final and same and self.urls[item] == row.url:
                failures[item] = ImageResult(
                    item, row.status, row.url, http_status=code, detail=str(row.detail or "")
                )
        return failures


def _final_http_status(code: int) -> bool:
    """4xx answers other than 408 and 429 will not change on a retry."""
    return 400 <= code < 500 and code not in _RETRY_STATUS


def _retryable_http_status(code: int) -> bool:
    return code in _RETRY_STATUS or code >= 500


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header: a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _HostRate:
    """At most ``rate`` request starts per second and host (``None``: unlimited); thread-safe."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 0.0 if rate is None else 1.0 / rate
        self.next_start: dict[str, float] = {}
        self.lock = threading.Lock()

    def wait(self, host: str) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_start.get(host, now))
            self.next_start[host] = start + self.interval
        time.sleep(start - now)


@dataclass
class _Downloader:
    """A bounded pool of worker threads sharing one ``httpx.Client`` (connection reuse).

    Results are recorded by the calling thread, so the manifest needs no lock. One item per
    worker is in flight, so memory does not grow with the number of items, and an interruption
    stops after at most ``workers`` items beyond the last one recorded.
    """

    store: _Store
    policy: _Policy
    record: Callable[[ImageResult], None]
    requests: int = 0

    def run(self, items: Sequence[int]) -> None:
        workers = self.policy.workers
        limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
        rate = _HostRate(self.policy.per_host_rate)
        stop = threading.Event()  # set on an error or interruption: workers take no new attempt
        queue = iter(items)
        with (
            httpx.Client(
                timeout=self.policy.timeout,
                limits=limits,
                follow_redirects=True,
                headers={"User-Agent": USER_AGENT},
            ) as client,
            ThreadPoolExecutor(workers) as pool,
        ):
            pending: set[Future[tuple[ImageResult, int]]] = set()
            try:
                while True:
                    for item in itertools.islice(queue, workers - len(pending)):
                        pending.add(pool.submit(self._one, item, client, rate, stop))
                    if not pending:
                        break
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        result, requests = future.result()
                        self.requests += requests
                        self.record(result)
            finally:
                stop.set()
                pool.shutdown(wait=True, cancel_futures=True)

    def _one(
        self, item: int, client: httpx.Client, rate: _HostRate, stop: threading.Event
    ) -> tuple[ImageResult, int]:
        """The item's result and the number of requests it took."""
        min_size = self.policy.min_size
        reused = self.store.reuse(item, min_size)
        if reused is not None:
            return reused, 0
        data, requests = self._get(item, self.store.urls[item] or "", client, rate, stop)
        if isinstance(data, ImageResult):
            return data, requests
        return self.store.keep_bytes(item, data, min_size), requests

    def _get(
        self, item: int, url: str, client: httpx.Client, rate: _HostRate, stop: threading.Event
    ) -> tuple[bytes | ImageResult, int]:
        """The body at ``url`` (or the failure after the last attempt) and the requests made."""
        host = urlsplit(url).hostname or ""
        failure = ImageResult(item, ERROR, url, detail="interrupted")
        retry_after: float | None = None
        for attempt in range(self.policy.retries + 1):
            if attempt:
                stop.wait(self.policy.delay(attempt - 1, retry_after))
                retry_after = None
            if stop.is_set():
                return failure, attempt
            rate.wait(host)
            try:
                response = client.get(url)
            except httpx.TimeoutException:
                detail = f"no answer within {self.policy.timeout} s"
                failure = ImageResult(item, TIMEOUT, url, detail=detail)
                continue
            except (httpx.NetworkError, httpx.RemoteProtocolError) as err:
                failure = ImageResult(item, ERROR, url, detail=f"{type(err).__name__}: {err}")
                continue
            except (httpx.HTTPError, httpx.InvalidURL) as err:  # bad URL, redirect loop: final
                detail = f"{type(err).__name__}: {err}"
                return ImageResult(item, ERROR, url, detail=detail), attempt + 1
            if response.is_success:
                return response.content, attempt + 1
            code = response.status_code
            failure = ImageResult(
                item, HTTP_ERROR, url, http_status=code, detail=response.reason_phrase
            )
            if not _retryable_http_status(code):
                return failure, attempt + 1
            retry_after = _retry_after(response.headers.get("Retry-After"))
        return failure, self.policy.retries + 1


@contextlib.contextmanager
def _recording(
    store: _Store, total: int, progress: bool, on_result: Callable[[ImageResult], None] | None
) -> Iterator[Callable[[ImageResult], None]]:
    """A ``record(result)`` function that fills the manifest, the progress bar and ``on_result``.

    The manifest is written when the block ends, also on an error or an interruption.
    """
    bar = tqdm(total=total, unit="img", desc="images", disable=not progress)
    n_ok = 0

    def record(result: ImageResult) -> None:
        nonlocal n_ok
        store.record(result)
        n_ok += result.status == OK
        bar.set_postfix_str(f"ok {n_ok}", refresh=False)
        bar.update()
        if on_result is not None:
            on_result(result)

    try:
        yield record
    finally:
        bar.close()
        store.write_manifest()


def _report(store: _Store, skipped: int, requests: int, started: float) -> ImageReport:
    counts = Counter(result.status for result in store.rows.values())
    return ImageReport(
        counts={status: counts[status] for status in STATUSES if counts[status]},
        reused=sum(result.reused for result in store.rows.values()),
        skipped=skipped,
        requests=requests,
        seconds=time.perf_counter() - started,
        manifest=store.manifest,
    )


def _update_catalog(dataset: Dataset, root: Path, rows: dict[int, ImageResult]) -> None:
    """Point the catalog at verified images only, then save the dataset folder.

    Items without a verified image lose a reference into the store (a file that is gone or
    broken) but keep one to elsewhere (for example a table's own image paths).
    """
    n = dataset.n_items
    catalog = dataset.catalog or ItemCatalog(texts=[""] * n, images=[None] * n)
    images = list(catalog.images)
    for item, result in rows.items():
        if result.status == OK:
            images[item] = result.path
        elif images[item] is not None and Path(images[item]).parts[:1] == (STORE,):
            images[item] = None
    dataset.catalog = ItemCatalog(texts=catalog.texts, images=images, root=root)
    dataset.save(root)


def download_images(
    dataset_dir: Path,
    *,
    workers: int = 16,
    per_host_rate: float | None = 20.0,
    retries: int = 4,
    timeout: float = 10.0,
    min_size: int = 32,
    backoff: float = 0.5,
    max_backoff: float = 60.0,
    retry_failed: bool = False,
    progress: bool = False,
    on_result: Callable[[ImageResult], None] | None = None,
) -> ImageReport:
    """Download the images of a dataset folder's items into its store (see the module docstring).

    Resumable: images already in the store are verified and kept without a request, and items an
    earlier run failed on for good (4xx other than 408/429, not an image, too small) are not
    requested again while their URL is unchanged, unless ``retry_failed``. When the run completes
    the catalog points at every verified image and the dataset folder is saved.

    Args:
        dataset_dir: an lmmrec dataset folder holding ``item_urls.parquet``.
        workers: concurrent downloads.
        per_host_rate: at most this many requests per second to one host; ``None``: no limit.
        retries: further attempts after a timeout, network error, 408, 429 or 5xx.
        timeout: seconds allowed to connect, and between bytes received.
        min_size: smallest width and height in pixels an image may have.
        backoff, max_backoff: the delay before retry ``n`` is about ``backoff * 2**n`` seconds
            (jittered), at most ``max_backoff``; a ``Retry-After`` header replaces it.
        retry_failed: request items that failed for good in an earlier run too.
        progress: show a progress bar (rate and time left) on stderr.
        on_result: called with each item's :class:`ImageResult` as it is recorded.

    Raises:
        DataError: not a dataset folder, or no ``item_urls.parquet``.
        ConfigError: a setting out of range.
    """
    policy = _Policy(workers, per_host_rate, retries, timeout, min_size, backoff, max_backoff)
    root = Path(dataset_dir)
    dataset = Dataset.load(root)
    urls = read_image_urls(root, dataset.item_ids)
    store = _Store(root, dataset.item_ids, urls)
    earlier = {} if retry_failed else store.final_failures()
    started = time.perf_counter()
    with _recording(store, len(urls), progress, on_result) as record:
        downloader = _Downloader(store, policy, record)
        pending = []
        for item, url in enumerate(urls):
            if url is None:
                record(ImageResult(item, NO_URL))
            elif item in earlier:
                record(earlier[item])
            else:
                pending.append(item)
        if pending:
            downloader.run(pending)
    _update_catalog(dataset, root, store.rows)
    return _report(store, len(earlier), downloader.requests, started)


def import_image_folder(
    dataset_dir: Path,
    folder: Path,
    *,
    by: Literal["raw_id", "index"] = "raw_id",
    copy: bool = False,
    min_size: int = 32,
    workers: int = 4,
    progress: bool = False,
    on_result: Callable[[ImageResult], None] | None = None,
) -> ImageReport:
    """Verify images already on disk and put them in a dataset folder's store.

    ``folder`` holds files named ``<key>.<any extension>``, the key being the item's raw id (an
    Amazon asin) or, with ``by="index"``, its item index. Each is verified like a download and
    hard-linked into the store (copied with ``copy=True`` or across file systems); items without
    a file there keep a verified image already in the store. The manifest and the catalog are
    updated as by :func:`download_images`.

    Raises:
        DataError: not a dataset folder, ``folder`` missing, or no file named after any item.
        ConfigError: ``by`` is neither ``"raw_id"`` nor ``"index"``, or ``min_size < 1``.
    """
    root, folder = Path(dataset_dir), Path(folder)
    if by not in ("raw_id", "index"):
        raise ConfigError(f"by={by!r}: name files by 'raw_id' or by 'index'")
    if min_size < 1:
        raise ConfigError(f"min_size={min_size!r} must be at least 1 pixel")
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder; pass the folder holding the item images")
    dataset = Dataset.load(root)
    n = dataset.n_items
    urls = read_image_urls(root, dataset.item_ids) if (root / URLS_FILE).is_file() else [None] * n
    files = {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.name[0] != "."}
    keys = dataset.item_ids.tolist() if by == "raw_id" else [str(i) for i in range(n)]
    sources = [files.get(key) for key in keys]
    if not any(sources):
        raise DataError(
            f"{folder}: no file is named after an item's {by} (for example {keys[0]}.jpg); "
            f"name the files <{by}>.<ext>" + (" or pass by='index'" if by == "raw_id" else "")
        )
    store = _Store(root, dataset.item_ids, urls)
    started = time.perf_counter()
    with (
        _recording(store, n, progress, on_result) as record,
        ThreadPoolExecutor(workers) as pool,
    ):
        for result in pool.map(
            lambda item: store.import_file(item, sources[item], copy, min_size), range(n)
        ):
            record(result)
    _update_catalog(dataset, root, store.rows)
    return _report(store, 0, 0, started)
