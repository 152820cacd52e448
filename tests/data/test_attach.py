"""Item content attached to MMRec folders: tables and Amazon metadata joined through the id map,
read back by load_dataset, downloads kept on a rerun, stale folders refused, the CLI."""

from __future__ import annotations

import gzip
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from lmmrec.cli.main import app
from lmmrec.data import load_dataset
from lmmrec.data.dataset import Dataset
from lmmrec.data.features import FeatureSet
from lmmrec.data.formats.attach import attach_items
from lmmrec.data.formats.mmrec import read_mmrec, write_mmrec
from lmmrec.data.images import download_images, read_image_urls
from lmmrec.errors import DataError

# item raw ids of the folder; B4 has no row in any source below, X9 is a source row of no item
ITEM_IDS = ["B0", "B1", "B2", "B3", "B4"]
INTER = [(0, 0, 0), (0, 1, 0), (0, 2, 1), (0, 3, 2), (1, 1, 0), (1, 2, 0), (1, 0, 1), (1, 3, 2)]
INTER += [(2, 0, 0), (2, 1, 1), (2, 2, 2), (2, 4, 0)]


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), "teal").save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def mmrec(tmp_path: Path) -> Path:
    """A tiny MMRec folder: shop.inter, both id maps, image_feat.npy and text_feat.npy."""
    users, items, labels = (np.array(c) for c in zip(*INTER, strict=True))
    dataset = Dataset.from_interactions(
        users,
        items,
        labels,
        name="shop",
        where="test",
        user_ids=np.array(["ann", "bob", "cy"]),
        item_ids=np.array(ITEM_IDS),
    )
    rng = np.random.default_rng(0)
    arrays = {"image": rng.normal(size=(5, 4)), "text": rng.normal(size=(5, 3))}
    dataset.add_feature_set(
        FeatureSet("vectors", {m: a.astype(np.float32) for m, a in arrays.items()})
    )
    folder = tmp_path / "shop"
    write_mmrec(dataset, folder, feature_set="vectors")
    return folder


def _items_csv(tmp_path: Path) -> Path:
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "b2.png").write_bytes(_png())
    frame = pd.DataFrame(
        {
            "asin": ["B3", "B0", "B1", "B2", "X9"],
            "title": ["Mug", "Cup", "Plate", None, "Other"],
            "description": ["blue", "", "round", "Bowl only", "x"],
            "picture": [
                "https://img.example/B3.jpg",
                None,
                "gone/b1.jpg",  # a relative path that does not exist
                "pics/b2.png",  # relative to the table's folder
                "https://img.example/X9.jpg",
            ],
        }
    )
    path = tmp_path / "items.csv"
    frame.to_csv(path, index=False)
    return path


def test_a_table_is_joined_through_the_id_map(mmrec: Path, tmp_path: Path) -> None:
    items = _items_csv(tmp_path)
    before = {p.name: p.read_bytes() for p in mmrec.iterdir()}
    report = attach_items(
        mmrec, items, text_columns=["title", "description"], image_column="picture"
    )
    assert report.kind == "table"
    assert (report.n_items, report.matched, report.unmatched) == (5, 4, ["B4"])
    assert report.other_rows == 1  # X9
    assert (report.with_text, report.with_image_url, report.with_image_file) == (4, 1, 2)
    assert report.missing_image_files == 1

    dataset = load_dataset(mmrec)
    original = read_mmrec(mmrec)
    assert dataset.catalog is not None and dataset.root == mmrec
    assert dataset.catalog.texts == ["Cup", "Plate round", "Bowl only", "Mug blue", ""]
    assert dataset.catalog.images[:2] == [None, str((tmp_path / "gone" / "b1.jpg").resolve())]
    assert dataset.catalog.load_image(2) is not None  # pics/b2.png, found from the MMRec folder
    assert dataset.catalog.images[3] is None and dataset.catalog.images[4] is None
    assert read_image_urls(mmrec, dataset.item_ids)[3] == "https://img.example/B3.jpg"
    # the interactions, id maps and MMRec features are those of the MMRec files
    for split in ("train", "valid", "test"):
        assert (dataset.split(split) != original.split(split)).nnz == 0
    np.testing.assert_array_equal(dataset.item_ids, ITEM_IDS)
    np.testing.assert_array_equal(
        dataset.feature_set("mmrec").arrays["image"], original.feature_set("mmrec").arrays["image"]
    )
    assert not (mmrec / "features").exists()  # the .npy files stay the only copy
    assert {p.name: p.read_bytes() for p in mmrec.iterdir() if p.name in before} == before
    assert dataset.info["content"]["unmatched_first"] == ["B4"]


def test_default_columns_and_parquet_ids_written_as_numbers(mmrec: Path, tmp_path: Path) -> None:
    (mmrec / "i_id_mapping.csv").write_text("asin\titemID\n10\t0\n11\t1\n12\t2\n13\t3\n14\t4\n")
    items = tmp_path / "items.parquet"
    pd.DataFrame(
        {"asin": [10, 12, 14], "text": ["ten", "twelve", None], "image": [None, None, None]}
    ).to_parquet(items)
    report = attach_items(mmrec, items)
    assert report.unmatched == ["11", "13"]
    assert load_dataset(mmrec).catalog.texts == ["ten", "", "twelve", "", ""]  # type: ignore[union-attr]


def _meta(tmp_path: Path, release: str) -> Path:
    if release == "2014":  # Python literals
        records = [
            {"asin": "B1", "title": "Plate &amp; co", "imUrl": "http://img/B1.jpg"},
            {"asin": "B0", "title": "Cup", "categories": [["Kitchen", "Cups"], ["Gifts"]]},
            {"asin": "Z7", "title": "not in the folder"},
        ]
        lines = [repr(r) for r in records]
    elif release == "2018":
        records = [
            {"asin": "B1", "title": "Plate &amp; co", "imageURLHighRes": ["https://img/B1.jpg"]},
            {"asin": "B0", "title": "Cup", "category": ["Kitchen", "Cups"]},
            {"asin": "Z7", "title": "not in the folder"},
        ]
        lines = [json.dumps(r) for r in records]
    else:
        records = [
            {
                "parent_asin": "B1",
                "title": "Plate &amp; co",
                "images": [{"large": "https://img/B1.jpg"}],
            },
            {"parent_asin": "B0", "title": "Cup", "categories": ["Kitchen", "Cups"]},
            {"parent_asin": "Z7", "title": "not in the folder"},
        ]
        lines = [json.dumps(r) for r in records]
    path = tmp_path / f"meta_{release}.json.gz"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return path


@pytest.mark.parametrize("release", ["2014", "2018", "2023"])
def test_amazon_metadata_of_every_release(mmrec: Path, tmp_path: Path, release: str) -> None:
    report = attach_items(mmrec, _meta(tmp_path, release))
    assert report.kind == "amazon"
    assert report.unmatched == ["B2", "B3", "B4"] and report.other_rows == 1
    dataset = load_dataset(mmrec)
    assert dataset.catalog is not None
    assert dataset.catalog.texts[:3] == ["Cup Kitchen Cups", "Plate & co", ""]
    assert dataset.catalog.images == [None] * 5  # URLs wait for the downloader
    urls = read_image_urls(mmrec, dataset.item_ids)
    assert urls[1] is not None and urls[1].endswith("/B1.jpg") and urls[0] is None


def test_metadata_fields_and_keys_can_be_chosen(mmrec: Path, tmp_path: Path) -> None:
    path = tmp_path / "meta.jsonl"
    path.write_text(
        json.dumps({"sku": "B3", "name": "Mug", "pic": "https://img/m.jpg", "asin": "nope"}) + "\n"
    )
    report = attach_items(mmrec, path, id_column="sku", text_columns=["name"], image_column="pic")
    assert report.matched == 1
    assert load_dataset(mmrec).catalog.texts[3] == "Mug"  # type: ignore[union-attr]
    assert read_image_urls(mmrec, ITEM_IDS)[3] == "https://img/m.jpg"


class _Images(BaseHTTPRequestHandler):
    """Serves one PNG for every path."""

    def do_GET(self) -> None:
        body = _png()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def image_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_images_download_and_a_rerun_keeps_them(
    mmrec: Path, tmp_path: Path, image_server: str
) -> None:
    items = tmp_path / "items.csv"
    rows = {"asin": ["B0", "B1", "B2"], "text": ["a", "b", "c"]}
    rows["image"] = [f"{image_server}/{i}.png" for i in range(3)]
    pd.DataFrame(rows).to_csv(items, index=False)
    attach_items(mmrec, items)
    downloaded = download_images(mmrec, per_host_rate=None, min_size=16)
    assert downloaded.counts == {"ok": 3, "no_url": 2}
    stored = load_dataset(mmrec).catalog.images  # type: ignore[union-attr]
    assert all(ref is not None and ref.startswith("images/") for ref in stored[:3])

    rows["text"] = ["A", "B", "C"]
    rows["image"][2] = f"{image_server}/new.png"  # a changed URL: its image must be fetched anew
    pd.DataFrame(rows).to_csv(items, index=False)
    report = attach_items(mmrec, items)  # again, with new texts
    assert report.kept_images == 2
    dataset = load_dataset(mmrec)
    assert dataset.catalog is not None
    assert dataset.catalog.texts[:3] == ["A", "B", "C"]
    assert dataset.catalog.images[:3] == [*stored[:2], None]
    assert dataset.catalog.load_image(0) is not None
    assert "mmrec" in dataset.features
    again = attach_items(mmrec, items)  # idempotent
    assert again.kept_images == 2 and load_dataset(mmrec).catalog.images == dataset.catalog.images  # type: ignore[union-attr]


def test_a_changed_inter_file_is_refused_until_attached_again(mmrec: Path, tmp_path: Path) -> None:
    items = _items_csv(tmp_path)
    attach_items(mmrec, items, text_columns=["title"])
    inter = mmrec / "shop.inter"
    inter.write_text(inter.read_text().replace("2\t4\t0", "2\t3\t0").replace("0\t3\t2", "0\t4\t2"))
    with pytest.raises(DataError, match=r"shop\.inter changed after item content was attached"):
        load_dataset(mmrec)
    attach_items(mmrec, items, text_columns=["title"])
    assert load_dataset(mmrec).test[0, 4] == 1
    meta = json.loads((mmrec / "dataset.json").read_text())
    meta["info"]["mmrec_files"] = 7
    (mmrec / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"info\.mmrec_files must map the \.inter file"):
        load_dataset(mmrec)


def test_errors_name_the_file_and_the_fix(mmrec: Path, tmp_path: Path) -> None:
    items = tmp_path / "items.csv"
    pd.DataFrame({"item": ["b0", "b1"], "text": ["x", "y"]}).to_csv(items, index=False)
    with pytest.raises(DataError, match=r"missing column\(s\) 'asin'.*--id-column"):
        attach_items(mmrec, items)
    with pytest.raises(
        DataError,
        match=r"none of the 5 items of .*shop \(raw ids from i_id_mapping\.csv, e\.g\. B0, B1, "
        r"B2\) has a row or record there \(its ids look like b0, b1\); name the id column",
    ):
        attach_items(mmrec, items, id_column="item")
    with pytest.raises(DataError, match=r"missing column\(s\) 'title'"):
        attach_items(mmrec, items, id_column="item", text_columns=["title"])
    pd.DataFrame({"asin": ["B0", "B0"], "text": ["x", "y"]}).to_csv(items, index=False)
    with pytest.raises(DataError, match="1 item ids appear in several rows"):
        attach_items(mmrec, items)
    pd.DataFrame({"asin": ["B0"], "title": ["x"]}).to_csv(items, index=False)
    with pytest.raises(DataError, match=r"no content column chosen \(found: 'asin', 'title'\)"):
        attach_items(mmrec, items)
    meta = tmp_path / "meta.json"
    meta.write_text("{'asin': 'Q1'}\n{'asin': 'Q2'}\n")
    with pytest.raises(DataError, match=r"its ids look like Q1, Q2"):
        attach_items(mmrec, meta)
    meta.write_text("{'asin': 'B0', broken\n")
    with pytest.raises(DataError, match="line 1: neither JSON nor a Python literal"):
        attach_items(mmrec, meta)
    assert not (mmrec / "dataset.json").exists()  # nothing written by a failed attach
    with pytest.raises(DataError, match="does not exist"):
        attach_items(mmrec, tmp_path / "nowhere.csv")


def test_cli_attach_items_reports_what_it_could_not_match(mmrec: Path, tmp_path: Path) -> None:
    items = _items_csv(tmp_path)
    result = CliRunner().invoke(
        app,
        [
            "data",
            "attach-items",
            str(mmrec),
            "--items",
            str(items),
            "--text-columns",
            "title,description",
            "--image-column",
            "picture",
        ],
    )
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "4 of 5 items found" in output
    assert "1 items not found (no text, no image): B4" in output
    assert "1 image paths do not exist" in output
    assert f"lmmrec data images {mmrec}" in output
    info = CliRunner().invoke(app, ["dataset", "info", str(mmrec)])
    assert info.exit_code == 0 and "True" in info.output  # has catalog
