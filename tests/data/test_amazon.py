"""Amazon dumps (2014, 2018, 2023): schemas, gzip, k-core by hand, dedup, text, saving, the CLI."""

from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from lmmrec.cli.main import app
from lmmrec.data.dataset import Dataset
from lmmrec.data.formats.amazon import clean_text, detect_version, item_text, read_amazon
from lmmrec.data.formats.mmrec import read_mmrec
from lmmrec.data.formats.table import read_table
from lmmrec.data.images import URLS_FILE, read_image_urls
from lmmrec.errors import DataError

CORE_USERS, CORE_ITEMS = ("A1", "A2", "A3"), ("B01", "B02", "B03")
# (user, item, rating, time in seconds). The 3-core, worked by hand: round 1 drops user AF
# (2 rows) and items B05 (2) and B06 (1); then AE has 1 row and B04 2, so round 2 drops both;
# then AD has 2 rows, so round 3 drops AD. Left: A1..A3 x B01..B03, each user's items in time
# order B01 < B02 < B03.
CORE = [
    (u, i, 5.0, 100 + 10 * k) for k, (u, i) in enumerate(itertools.product(CORE_USERS, CORE_ITEMS))
]
TAIL = [
    ("AD", "B01", 4.0, 50),
    ("AD", "B02", 4.0, 51),
    ("AD", "B04", 4.0, 52),
    ("AE", "B04", 2.0, 53),
    ("AE", "B05", 2.0, 54),
    ("AE", "B06", 2.0, 55),
    ("AF", "B04", 3.0, 56),
    ("AF", "B05", 3.0, 57),
]
REPEAT = ("A1", "B01", 1.0, 999)  # a later review of the same pair: the earliest must be kept
REVIEWS = [*CORE, *TAIL, REPEAT]
N_RECORDS = len(REVIEWS) + 1  # plus one record without a user
EXPECTED_TEXT = [
    "Café & Bistro Mug Acme Home & Kitchen Mugs Holds 12 oz. Dishwasher safe",
    'Kid\'s "Dino" Cup Baby',
    "Zoë 日本語 text",
]
IMAGE_URLS = {
    "2014": ["http://img/B01.jpg", "http://img/B02.jpg", None],
    "2018": ["https://img/B01.jpg", "https://img/B02.jpg", None],
    "2023": ["https://img/B01.jpg", "https://img/B02.jpg", None],
}


def _write(path: Path, lines: list[str], gz: bool = False) -> Path:
    text = "\n".join(lines) + "\n"
    if gz:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _review_lines(release: str, rows: list[tuple]) -> list[str]:
    """Reviews as JSON lines in the release's schema, with a record lacking its user."""
    lines = []
    for user, item, rating, time in rows:
        if release == "2023":
            record = {
                "rating": rating,
                "title": "Nice",
                "text": "Works <br />well",
                "images": [],
                "asin": f"{item}-RED",
                "parent_asin": item,
                "user_id": user,
                "timestamp": time * 1000,
                "verified_purchase": True,
            }
        else:
            record = {
                "reviewerID": user,
                "asin": item,
                "reviewerName": "Zoë",
                "overall": rating,
                "summary": "Nice",
                "unixReviewTime": time,
                "reviewTime": "01 2, 2014",
            }
            record.update({"verified": True, "style": {"Size:": " L"}} if release == "2018" else {})
            record.update({"helpful": [0, 0]} if release == "2014" else {})
        lines.append(json.dumps(record, ensure_ascii=release == "2014"))
    no_user = json.loads(lines[0])
    no_user.pop("user_id" if release == "2023" else "reviewerID")
    return [*lines[:3], json.dumps(no_user), *lines[3:]]


def _csv_lines(release: str, rows: list[tuple]) -> list[str]:
    """Ratings-only CSV: 2014 user,item,...; 2018 item,user,...; 2023 with a header."""
    rows = [*rows[:3], ("", "B01", 5.0, 5), *rows[3:]]
    if release == "2018":
        return [f"{i},{u},{r},{t}" for u, i, r, t in rows]
    lines = [f"{u},{i},{r},{t * (1000 if release == '2023' else 1)}" for u, i, r, t in rows]
    return ["user_id,parent_asin,rating,timestamp", *lines] if release == "2023" else lines


def _meta_lines(release: str) -> list[str]:
    description = ["Holds 12 oz.", "<br/>Dishwasher   safe\n"]
    if release == "2014":  # Python literals, as in the 2014 dump (single quotes)
        records = [
            {
                "asin": "B01",
                "title": "Café &amp; Bistro <b>Mug</b>",
                "brand": "Acme",
                "categories": [["Home & Kitchen", "Mugs"], ["Gifts"]],
                "description": " ".join(description),
                "imUrl": "http://img/B01.jpg",
                "related": {"also_bought": ["B02"]},
                "salesRank": {"Home &amp; Kitchen": 5},
            },
            {
                "asin": "B02",
                "title": 'Kid\'s "Dino" Cup',
                "categories": [["Baby"]],
                "imUrl": "http://img/B02.jpg",
            },
            {"asin": "B03", "brand": "Zoë", "description": "日本語 &lt;i&gt;text&lt;/i&gt;"},
            {"asin": "B04", "title": "filtered out", "imUrl": "http://img/B04.jpg"},
        ]
        return [repr(r) for r in records]
    if release == "2018":
        records = [
            {
                "asin": "B01",
                "title": "Café &amp; Bistro <b>Mug</b>",
                "brand": "Acme",
                "category": ["Home & Kitchen", "Mugs"],
                "description": description,
                "image": ["https://img/B01_SR38,50_.jpg"],
                "imageURLHighRes": ["https://img/B01.jpg"],
                "main_cat": "Home",
            },
            {
                "asin": "B02",
                "title": 'Kid\'s "Dino" Cup',
                "category": ["Baby"],
                "description": [],
                "image": ["https://img/B02.jpg"],
            },
            {
                "asin": "B03",
                "brand": "Zoë",
                "description": "日本語 &lt;i&gt;text&lt;/i&gt;",
                "image": [],
            },
            {"asin": "B01", "title": "a repeated record: ignored"},
        ]
    else:
        records = [
            {
                "main_category": "Home",
                "title": "Café &amp; Bistro <b>Mug</b>",
                "store": "Acme",
                "categories": ["Home & Kitchen", "Mugs"],
                "description": description,
                "images": [
                    {
                        "thumb": "https://img/B01_t.jpg",
                        "large": "https://img/B01.jpg",
                        "hi_res": None,
                        "variant": "MAIN",
                    }
                ],
                "details": {"Brand": "Acme"},
                "parent_asin": "B01",
            },
            {
                "title": 'Kid\'s "Dino" Cup',
                "categories": ["Baby"],
                "description": [],
                "images": [
                    {
                        "thumb": "https://img/B02_t.jpg",
                        "large": None,
                        "hi_res": "https://img/B02.jpg",
                    }
                ],
                "parent_asin": "B02",
            },
            {
                "store": "Zoë",
                "description": ["日本語 &lt;i&gt;text&lt;/i&gt;"],
                "images": [],
                "parent_asin": "B03",
            },
        ]
    return [json.dumps(r, ensure_ascii=False) for r in records]


def _files(tmp_path: Path, release: str, kind: str, gz: bool) -> tuple[Path, Path]:
    lines = _review_lines(release, REVIEWS) if kind == "json" else _csv_lines(release, REVIEWS)
    reviews = _write(tmp_path / f"reviews_{release}.{kind}{'.gz' if gz else ''}", lines, gz)
    meta = _write(tmp_path / f"meta_{release}.json{'.gz' if gz else ''}", _meta_lines(release), gz)
    return reviews, meta


def _pairs(matrix) -> set[tuple[int, int]]:
    coo = matrix.tocoo()
    return set(zip(coo.row.tolist(), coo.col.tolist(), strict=True))


CASES = [
    *((release, "json", gz) for release in ("2014", "2018", "2023") for gz in (False, True)),
    ("2014", "csv", False),
    ("2018", "csv", True),
    ("2023", "csv", False),
]


@pytest.mark.parametrize(("release", "kind", "gz"), CASES)
def test_every_release_gives_the_hand_worked_core(
    tmp_path: Path, release: str, kind: str, gz: bool
) -> None:
    reviews, meta = _files(tmp_path, release, kind, gz)
    assert detect_version(reviews, meta) == release
    data = read_amazon(reviews, meta, k_core=3, split="temporal")
    dataset = data.dataset
    assert dataset.user_ids.tolist() == list(CORE_USERS)
    assert dataset.item_ids.tolist() == list(CORE_ITEMS)
    # temporal split of 3 interactions per user: the earliest (B01, not its later repeat) trains
    assert _pairs(dataset.train) == {(u, 0) for u in range(3)}
    assert _pairs(dataset.valid) == {(u, 1) for u in range(3)}
    assert _pairs(dataset.test) == {(u, 2) for u in range(3)}
    assert dataset.catalog is not None
    assert dataset.catalog.texts == EXPECTED_TEXT
    assert dataset.catalog.images == [None, None, None]  # no image until one is downloaded
    assert data.image_urls == IMAGE_URLS[release]
    assert dataset.info["release"] == release
    assert dataset.info["statistics"] == {
        "records_read": N_RECORDS,
        "records_without_user_item_or_time": 1,
        "below_min_rating": 0,
        "repeated_pairs_dropped": 1,
        "before_filtering": {"users": 6, "items": 6, "interactions": len(REVIEWS) - 1},
        "after_filtering": {"users": 3, "items": 3, "interactions": 9},
        "items_with_metadata": 3,
        "items_with_text": 3,
        "items_with_image_url": 2,
    }


def test_gzip_is_recognised_by_its_bytes_not_its_name(tmp_path: Path) -> None:
    reviews, meta = _files(tmp_path, "2018", "json", gz=True)
    renamed = reviews.rename(tmp_path / "reviews.json")  # gzip content, no .gz suffix
    plain = _write(tmp_path / "reviews.json.gz", _review_lines("2018", REVIEWS))  # and the reverse
    a = read_amazon(renamed, meta, k_core=3).dataset
    b = read_amazon(plain, meta, k_core=3).dataset
    assert a.catalog is not None and a.catalog.texts == EXPECTED_TEXT
    for name in ("train", "valid", "test"):
        assert _pairs(a.split(name)) == _pairs(b.split(name))


def test_metadata_is_read_as_python_literals_never_evaluated(tmp_path: Path) -> None:
    reviews, meta = _files(tmp_path, "2014", "json", gz=False)
    assert "'asin': 'B01'" in meta.read_text()  # single quotes: not JSON
    marker = tmp_path / "evaluated"
    _write(meta, [*_meta_lines("2014"), f"__import__('pathlib').Path({str(marker)!r}).touch()"])
    with pytest.raises(DataError, match=r"line 5: neither JSON nor a Python literal"):
        read_amazon(reviews, meta, k_core=3)
    assert not marker.exists()


@pytest.mark.parametrize("split", ["random", "temporal", "loo"])
def test_same_dataset_as_read_table_for_the_same_interactions(tmp_path: Path, split: str) -> None:
    rng = np.random.default_rng(3)
    n = 600
    users = rng.integers(0, 40, n)
    items = rng.zipf(1.6, n) % 30
    times = rng.integers(0, 50, n)  # many ties and repeated pairs
    rows = [(f"U{u}", f"I{i}", 5.0, int(t)) for u, i, t in zip(users, items, times, strict=True)]
    ratings = _write(tmp_path / "ratings.csv", [f"{u},{i},{r},{t}" for u, i, r, t in rows])
    table = tmp_path / "table.csv"
    pd.DataFrame(rows, columns=["user", "item", "rating", "time"]).to_csv(table, index=False)

    ours = read_amazon(ratings, version="2014", k_core=3, split=split, seed=7).dataset
    theirs = read_table(table, time_col="time", k_core=3, split=split, seed=7)
    assert ours.user_ids.tolist() == theirs.user_ids.tolist()
    assert ours.item_ids.tolist() == theirs.item_ids.tolist()
    for name in ("train", "valid", "test"):
        assert _pairs(ours.split(name)) == _pairs(theirs.split(name)), name


def test_min_rating_drops_low_ratings_before_repeats(tmp_path: Path) -> None:
    reviews, _ = _files(tmp_path, "2014", "json", gz=False)
    data = read_amazon(reviews, k_core=1, min_rating=3.0, split="temporal")
    statistics = data.dataset.info["statistics"]
    # AE's three 2-star reviews go, and the 1-star repeat of (A1, B01)
    assert statistics["below_min_rating"] == 4
    assert statistics["repeated_pairs_dropped"] == 0
    assert statistics["after_filtering"]["interactions"] == len(REVIEWS) - 4
    assert "AE" not in data.dataset.user_ids.tolist()
    assert data.dataset.catalog is None and data.image_urls == [None] * data.dataset.n_items


def test_save_writes_the_dataset_its_urls_and_an_mmrec_folder(tmp_path: Path) -> None:
    reviews, meta = _files(tmp_path, "2023", "json", gz=True)
    data = read_amazon(reviews, meta, k_core=3, split="temporal", name="mugs")
    data.save(tmp_path / "out", mmrec=tmp_path / "mmrec")

    loaded = Dataset.load(tmp_path / "out")
    assert loaded.name == "mugs"
    assert loaded.catalog is not None and loaded.catalog.texts == EXPECTED_TEXT
    assert loaded.info["statistics"] == data.dataset.info["statistics"]
    assert pd.read_parquet(tmp_path / "out" / URLS_FILE)["raw_id"].tolist() == list(CORE_ITEMS)
    assert read_image_urls(tmp_path / "out", CORE_ITEMS) == IMAGE_URLS["2023"]
    mmrec = read_mmrec(tmp_path / "mmrec")
    assert mmrec.item_ids.tolist() == list(CORE_ITEMS)
    assert _pairs(mmrec.test) == _pairs(loaded.test)


def test_item_text_cleans_and_takes_any_field() -> None:
    record = {"title": "A&amp;B", "feature": ["<li>light</li>", "<li>strong</li>"], "x": 3}
    assert item_text(record, ("title", "feature", "x", "absent")) == "A&B light strong 3"
    assert clean_text("3 < 5 and 6 > 2,\n\t<p>ok</p><!-- gone -->") == "3 < 5 and 6 > 2, ok"
    assert item_text({"categories": [["Toys", "Cars"], ["Gifts"]]}, ("categories",)) == "Toys Cars"


@pytest.mark.parametrize(
    ("lines", "match"),
    [
        (['{"foo": 1}'], "none of the review keys"),
        (['{"reviewerID": "A", "asin": "B", "unixReviewTime": 1}', "{not json"], "line 2"),
        ([""], "is empty"),
        (["A1,B1,5.0,yesterday"], "a rating or time is not a number"),
    ],
)
def test_bad_review_files_are_reported(tmp_path: Path, lines: list[str], match: str) -> None:
    with pytest.raises(DataError, match=match):
        read_amazon(_write(tmp_path / "reviews.json", lines))


def test_truncated_gzip_and_over_strict_core_are_reported(tmp_path: Path) -> None:
    reviews, _ = _files(tmp_path, "2018", "json", gz=True)
    truncated = tmp_path / "cut.json.gz"
    truncated.write_bytes(reviews.read_bytes()[:-30])
    with pytest.raises(DataError, match="truncated"):
        read_amazon(truncated, k_core=3)
    with pytest.raises(DataError, match="lower k_core"):
        read_amazon(reviews, k_core=4)
    with pytest.raises(DataError, match="unknown Amazon release '2020'"):
        read_amazon(reviews, version="2020")  # type: ignore[arg-type]


def test_cli_amazon_and_table(tmp_path: Path) -> None:
    reviews, meta = _files(tmp_path, "2014", "json", gz=True)
    runner = CliRunner()
    out = tmp_path / "ds"
    args = ["data", "amazon", str(reviews), "--meta", str(meta), "--out", str(out)]
    result = runner.invoke(app, [*args, "--k-core", "3", "--text-fields", "title,brand"])
    assert result.exit_code == 0, result.output
    assert "3 users, 3 items, 9 interactions" in " ".join(result.output.split())  # rich wraps
    assert Dataset.load(out).catalog.texts[0] == "Café & Bistro Mug Acme"

    table = tmp_path / "table.csv"
    pd.DataFrame([r[:2] for r in REVIEWS], columns=["user", "item"]).to_csv(table, index=False)
    args = ["data", "table", str(table), "--out", str(tmp_path / "t"), "--k-core", "3"]
    result = runner.invoke(app, [*args, "--mmrec", str(tmp_path / "t_mmrec")])
    assert result.exit_code == 0, result.output
    assert Dataset.load(tmp_path / "t").n_interactions == 9
    assert (tmp_path / "t_mmrec" / "table.inter").is_file()
