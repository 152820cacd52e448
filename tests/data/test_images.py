"""The image store: downloads from a local HTTP server (statuses, retries, rate, resume) and
folder imports, with the manifest and the catalog checked after each run."""

from __future__ import annotations

import io
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from lmmrec.cli.main import app
from lmmrec.data.catalog import ItemCatalog
from lmmrec.data.dataset import Dataset
from lmmrec.data.images import (
    MANIFEST,
    STORE,
    ImageResult,
    _Policy,
    _retry_after,
    download_images,
    import_image_folder,
    store_stem,
    write_image_urls,
)
from lmmrec.data.splits import random_split
from lmmrec.errors import ConfigError, DataError


def _image(fmt: str, size: int = 48, colour: str = "teal") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, fmt)
    return buffer.getvalue()


JPEG, PNG, TINY = _image("JPEG"), _image("PNG", colour="orange"), _image("PNG", size=8)
TRUNCATED = JPEG[: len(JPEG) // 2]


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Site:
    """Replies per path (the last one repeats) and the number of requests per path."""

    base: str = ""
    routes: dict[str, list[Reply]] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"{self.base}{path}"


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        site: Site = self.server.site  # type: ignore[attr-defined]
        with site.lock:
            site.hits[self.path] += 1
            replies = site.routes.get(self.path, [Reply(404)])
            reply = replies.pop(0) if len(replies) > 1 else replies[0]
        time.sleep(reply.delay)
        try:
            self.send_response(reply.status)
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def site() -> Iterator[Site]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.site = Site(base=f"http://127.0.0.1:{server.server_address[1]}")  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server.site  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


def _dataset(root: Path, urls: list[str | None]) -> Path:
    """A saved dataset with one item per URL (raw ids B0, B1, ...) and its item_urls.parquet."""
    n_items = len(urls)
    users = np.repeat(np.arange(3), n_items)
    items = np.tile(np.arange(n_items), 3)
    dataset = Dataset.from_interactions(
        users,
        items,
        random_split(users, seed=0),
        name="shop",
        where="test",
        item_ids=np.array([f"B{i}" for i in range(n_items)]),
        catalog=ItemCatalog(texts=[f"item {i}" for i in range(n_items)], images=[None] * n_items),
    )
    dataset.save(root)
    write_image_urls(root, dataset.item_ids, urls)
    return root


def _manifest(root: Path) -> pd.DataFrame:
    return pd.read_parquet(root / STORE / MANIFEST).set_index("raw_id")


FAST = {"per_host_rate": None, "backoff": 0.001, "timeout": 2.0}


def test_every_outcome_is_recorded_and_only_verified_images_are_referenced(
    site: Site, tmp_path: Path
) -> None:
    site.routes = {
        "/jpeg": [Reply(body=JPEG, headers={"Content-Type": "image/jpeg"})],
        "/png": [Reply(body=PNG)],
        "/missing": [Reply(404)],
        "/truncated": [Reply(body=TRUNCATED)],
        "/page": [Reply(body=b"<html>no image here</html>")],
        "/tiny": [Reply(body=TINY)],
        "/broken": [Reply(500)],
        "/slow": [Reply(body=JPEG, delay=1.0)],
    }
    paths = list(site.routes)
    root = _dataset(tmp_path / "shop", [*(site.url(p) for p in paths), None])
    started = time.perf_counter()
    report = download_images(root, workers=4, retries=1, min_size=16, **{**FAST, "timeout": 0.2})
    assert time.perf_counter() - started < 3

    expected = ["ok", "ok", "http_error", "not_image", "not_image", "too_small", "http_error"]
    expected += ["timeout", "no_url"]
    manifest = _manifest(root)
    assert manifest["status"].tolist() == expected
    assert manifest.loc["B2", "http_status"] == 404 and manifest.loc["B6", "http_status"] == 500
    assert (
        manifest.loc["B0", "path"] == "images/B0.jpg"
        and manifest.loc["B1", "path"] == "images/B1.png"
    )
    assert manifest.loc["B0", "width"] == 48
    assert report.counts == {
        "ok": 2,
        "no_url": 1,
        "http_error": 2,
        "timeout": 1,
        "not_image": 2,
        "too_small": 1,
    }
    # 404 is final; 500 and the timeout are retried once
    assert site.hits["/missing"] == 1 and site.hits["/broken"] == 2 and site.hits["/slow"] == 2
    assert report.requests == sum(site.hits.values()) == 10

    stored = sorted(p.name for p in (root / STORE).iterdir())
    assert stored == ["B0.jpg", "B1.png", MANIFEST]
    dataset = Dataset.load(root)
    assert dataset.catalog is not None
    assert dataset.catalog.images == ["images/B0.jpg", "images/B1.png", *[None] * 7]
    assert dataset.catalog.texts[8] == "item 8"  # items without an image keep their place
    loaded = dataset.catalog.load_image(1)
    assert loaded is not None and loaded.getpixel((0, 0)) == (255, 165, 0)


def test_429_waits_for_retry_after_then_succeeds(site: Site, tmp_path: Path) -> None:
    site.routes = {"/busy": [Reply(429, headers={"Retry-After": "0.3"}), Reply(body=PNG)]}
    root = _dataset(tmp_path / "shop", [site.url("/busy")] * 3)
    started = time.perf_counter()
    report = download_images(root, workers=1, retries=2, **FAST)
    assert time.perf_counter() - started >= 0.3  # the back-off alone would be ~1 ms
    assert report.counts == {"ok": 3} and site.hits["/busy"] == 4


def test_per_host_rate_spaces_out_requests(site: Site, tmp_path: Path) -> None:
    site.routes = {f"/{i}": [Reply(body=PNG)] for i in range(5)}
    root = _dataset(tmp_path / "shop", [site.url(f"/{i}") for i in range(5)])
    started = time.perf_counter()
    download_images(root, workers=5, **{**FAST, "per_host_rate": 10.0})
    assert time.perf_counter() - started >= 0.35  # 5 starts, 0.1 s apart


class _Interrupted(Exception):
    pass


def test_interrupted_run_resumes_with_only_the_missing_requests(site: Site, tmp_path: Path) -> None:
    site.routes = {f"/{i}": [Reply(body=JPEG)] for i in range(5)} | {"/gone": [Reply(404)]}
    root = _dataset(tmp_path / "shop", [*(site.url(f"/{i}") for i in range(5)), site.url("/gone")])

    def stop_after_two(result: ImageResult) -> None:
        if result.item == 1:
            raise _Interrupted

    with pytest.raises(_Interrupted):
        download_images(root, workers=1, on_result=stop_after_two, **FAST)
    assert _manifest(root)["status"].to_dict() == {"B0": "ok", "B1": "ok"}  # written on the way out
    assert Dataset.load(root).catalog.images == [None] * 6  # the catalog waits for a whole run
    assert sum(site.hits.values()) == 2

    (root / STORE / "B2.jpg").write_bytes(b"half an image, left by a crash")
    report = download_images(root, workers=2, **FAST)
    assert report.reused == 2 and report.counts == {"ok": 5, "http_error": 1}
    assert all(site.hits[f"/{i}"] == 1 for i in range(5)) and site.hits["/gone"] == 1

    report = download_images(root, workers=2, **FAST)  # nothing left to fetch
    assert (report.requests, report.reused, report.skipped) == (0, 5, 1)
    assert _manifest(root).loc["B5", "http_status"] == 404

    report = download_images(root, workers=2, retry_failed=True, **FAST)
    assert report.requests == 1 and site.hits["/gone"] == 2
    assert Dataset.load(root).catalog.images == [f"images/B{i}.jpg" for i in range(5)] + [None]


def test_import_image_folder_verifies_and_links(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "shop", [None] * 5)
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "B0.jpeg").write_bytes(JPEG)
    (folder / "B1.png").write_bytes(PNG)
    (folder / "B2.jpg").write_bytes(TRUNCATED)
    (folder / "B3.png").write_bytes(TINY)
    (folder / "notes.txt").write_text("not an item")

    report = import_image_folder(root, folder, min_size=16)
    assert _manifest(root)["status"].tolist() == ["ok", "ok", "not_image", "too_small", "no_file"]
    assert report.counts == {"ok": 2, "no_file": 1, "not_image": 1, "too_small": 1}
    assert os.path.samefile(root / STORE / "B0.jpg", folder / "B0.jpeg")  # a hard link
    assert Dataset.load(root).catalog.images == ["images/B0.jpg", "images/B1.png", None, None, None]

    (folder / "B1.png").unlink()  # the store keeps its own link
    by_index = tmp_path / "by_index"
    by_index.mkdir()
    (by_index / "3.png").write_bytes(PNG)
    report = import_image_folder(root, by_index, by="index", copy=True, min_size=16)
    assert not os.path.samefile(root / STORE / "B3.png", by_index / "3.png")
    # items without a file in the new folder keep their stored images
    assert report.reused == 2 and report.counts == {"ok": 3, "no_file": 2}
    images = Dataset.load(root).catalog.images
    assert images == ["images/B0.jpg", "images/B1.png", None, "images/B3.png", None]


def test_user_errors(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "shop", [None] * 3)
    (root / "item_urls.parquet").unlink()
    with pytest.raises(DataError, match=r"item_urls.parquet is missing"):
        download_images(root)
    with pytest.raises(
        DataError, match=r"no file is named after an item's raw_id \(for example B0"
    ):
        import_image_folder(root, tmp_path)
    with pytest.raises(ConfigError, match="workers=0"):
        download_images(root, workers=0)


def test_retry_delays() -> None:
    assert _retry_after("2") == 2.0 and _retry_after("soon") is None and _retry_after(None) is None
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past
    policy = _Policy(1, None, 4, 1.0, 1, backoff=1.0, max_backoff=6.0)
    assert all(2.0 <= policy.delay(2, None) <= 4.0 for _ in range(50))  # cap 4, equal jitter
    assert all(3.0 <= policy.delay(5, None) <= 6.0 for _ in range(50))  # capped at max_backoff
    assert policy.delay(0, 30.0) == 6.0  # Retry-After, capped too


def test_store_names_are_safe_and_distinct() -> None:
    assert store_stem("B00ABC123") == "B00ABC123"
    odd = [store_stem(raw) for raw in ("a/b", "a_b", "../x", "a?b")]
    assert len(set(odd)) == 4 and all("/" not in s and not s.startswith(".") for s in odd)


def test_cli_images_imports_a_folder_and_prints_the_summary(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "shop", [None] * 3)
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "B0.png").write_bytes(PNG)
    result = CliRunner().invoke(app, ["data", "images", str(root), "--from-folder", str(folder)])
    assert result.exit_code == 0, result.output
    assert "no_file" in result.output and "manifest" in result.output
    assert Dataset.load(root).catalog.images == ["images/B0.png", None, None]
    (root / "item_urls.parquet").unlink()
    result = CliRunner().invoke(app, ["data", "images", str(root)])
    assert isinstance(result.exception, DataError)
