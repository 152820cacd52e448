"""Readers: MMRec folders (round trip and every malformed case), generic tables, dispatch."""

from __future__ import annotations

import sys
import time
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmmrec.data import load_dataset
from lmmrec.data.dataset import Dataset
from lmmrec.data.features import FeatureSet
from lmmrec.data.formats.mmrec import read_mmrec, write_mmrec
from lmmrec.data.formats.table import read_table
from lmmrec.data.splits import TEST, TRAIN, VALID, random_split
from lmmrec.errors import DataError, FeatureError

AMAZON = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "amazon"

# a valid MMRec .inter: 3 users, 4 items, every split non-empty
INTER = [
    (0, 0, 0),
    (0, 1, 0),
    (0, 2, 1),
    (0, 3, 2),
    (1, 1, 0),
    (1, 2, 0),
    (1, 0, 1),
    (1, 3, 2),
    (2, 0, 0),
    (2, 1, 1),
    (2, 2, 2),
]


def _write_inter(
    folder: Path, rows: list[tuple], name: str = "shop", header: str = "userID\titemID\tx_label"
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.inter"
    path.write_text("\n".join([header, *("\t".join(map(str, r)) for r in rows)]) + "\n")
    return path


def _mmrec_dataset() -> Dataset:
    users, items, labels = (np.array(c) for c in zip(*INTER, strict=True))
    dataset = Dataset.from_interactions(
        users,
        items,
        labels,
        name="shop",
        where="test",
        n_items=5,  # item 4 has no interaction
        user_ids=np.array(["ann", "bob", "cy"]),
        item_ids=np.array(["B0", "B1", "B2", "B3", "B4"]),
    )
    rng = np.random.default_rng(0)
    dataset.add_feature_set(
        FeatureSet(
            name="clip",
            arrays={
                "image": rng.normal(size=(5, 4)).astype(np.float32),
                "text": rng.normal(size=(5, 3)).astype(np.float32),
            },
        )
    )
    return dataset


def _assert_same_interactions(a: Dataset, b: Dataset) -> None:
    assert (a.n_users, a.n_items) == (b.n_users, b.n_items)
    for split in ("train", "valid", "test"):
        assert (a.split(split) != b.split(split)).nnz == 0
    np.testing.assert_array_equal(a.user_ids, b.user_ids)
    np.testing.assert_array_equal(a.item_ids, b.item_ids)


def test_mmrec_round_trip_with_features(tmp_path: Path) -> None:
    dataset = _mmrec_dataset()
    write_mmrec(dataset, tmp_path / "shop", feature_set="clip")
    assert sorted(p.name for p in (tmp_path / "shop").iterdir()) == [
        "i_id_mapping.csv",
        "image_feat.npy",
        "shop.inter",
        "text_feat.npy",
        "u_id_mapping.csv",
    ]
    loaded = read_mmrec(tmp_path / "shop")
    assert loaded.name == "shop"
    _assert_same_interactions(loaded, dataset)
    features = loaded.feature_set("mmrec")
    assert features.manifest["encoder"] == "mmrec-import"
    assert features.manifest["source"]["image"].endswith("image_feat.npy")
    for modality, array in dataset.features["clip"].arrays.items():
        np.testing.assert_array_equal(features.arrays[modality], array)


def test_mmrec_reads_plain_ids_and_ignores_extra_columns(tmp_path: Path) -> None:
    # columns are found by name: x_label comes last here, after two ignored columns
    rows = [(u, i, 5, 1_700_000_000 + k, x) for k, (u, i, x) in enumerate(INTER)]
    _write_inter(tmp_path, rows, header="userID\titemID\trating\ttimestamp\tx_label")
    dataset = read_mmrec(tmp_path)
    np.testing.assert_array_equal(dataset.user_ids, ["0", "1", "2"])
    assert (dataset.train.nnz, dataset.valid.nnz, dataset.test.nnz) == (5, 3, 3)
    assert dataset.features == {}


def test_mmrec_picks_the_inter_file(tmp_path: Path) -> None:
    folder = tmp_path / "shop"
    _write_inter(folder, INTER, name="shop")
    _write_inter(folder, [*INTER[:-1], (2, 3, 2)], name="other")
    assert read_mmrec(folder).test[2, 2] == 1.0  # <folder name>.inter preferred
    assert read_mmrec(folder, name="other").test[2, 3] == 1.0
    with pytest.raises(
        DataError,
        match=r"has no missing\.inter \(\.inter files there: "
        r"other\.inter, shop\.inter\)",
    ):
        read_mmrec(folder, name="missing")
    (folder / "shop.inter").unlink()
    _write_inter(folder, INTER, name="third")
    with pytest.raises(DataError, match=r"several \.inter files \(other\.inter, third\.inter\)"):
        read_mmrec(folder)
    with pytest.raises(DataError, match=r"holds no \.inter file"):
        read_mmrec(tmp_path)
    with pytest.raises(DataError, match="is not a folder"):
        read_mmrec(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("header", "rows", "message"),
    [
        (
            "userID\titemID\trating",
            [(0, 0, 1)],
            r"shop\.inter: missing column\(s\) 'x_label' \(found: 'userID', 'itemID', 'rating'\)",
        ),
        (
            "userID\titemID\tx_label",
            [*INTER[:3], ("u9", 1, 0)],
            r"column 'userID' must hold integers, but 1 values do not \(first: 'u9' on line 5\)",
        ),
        (
            "userID\titemID\tx_label",
            [*INTER[:3], (0, "", 0)],
            r"column 'itemID' must hold integers.*first: '' on line 5",
        ),
        (
            "userID\titemID\tx_label",
            [(0, 0, 0), (0, 2, 1), (1, 3, 2), (1, 0, 0)],
            r"itemID must run over 0\.\.3 with none absent, but 1 of those ids never occur "
            r"\(first: \[1\]\).*read_table",
        ),
        (
            "userID\titemID\tx_label",
            [*INTER[:-1], (2, 2, 3)],
            r"x_label must be 0 \(train\), 1 \(valid\) or 2 \(test\), but 1 rows hold other values "
            r"\(first: 3 on line 12\)",
        ),
        (
            "userID\titemID\tx_label",
            [*INTER, (0, 0, 2)],
            r"1 rows repeat an earlier \(userID, itemID\) pair",
        ),
        (
            "userID\titemID\tx_label",
            [(u, i, 0 if x == 1 else x) for u, i, x in INTER],
            "the valid split is empty",
        ),
        ("userID\titemID\tx_label", [], "no interactions below the header line"),
        (
            "userID\titemID\tx_label",
            [*INTER[:3], (0, '"1', 0)],
            r"cannot be parsed as tab-separated text \(.*EOF inside string",
        ),
        (
            "userID\titemID\tx_label",
            [*INTER[:3], (0, 1)],
            r"column 'x_label' must hold integers.*first: '' on line 5",
        ),
        (  # regression (issue 14): an OverflowError traceback
            "userID\titemID\tx_label",
            [*INTER[:3], (0, "+00099999999999999999999", 1), (1, 2**63 - 1, 0)],
            r"column 'itemID' holds 1 value\(s\) too large for a 64-bit integer \(first: "
            r"'\+00099999999999999999999' on line 5; the limit is 9223372036854775807\).*re-index",
        ),
        (  # within 64 bits but far beyond the rows: no 2**63-entry count is allocated
            "userID\titemID\tx_label",
            [*INTER, (1, 2**63 - 1, 0)],
            r"itemID must run over 0\.\.9223372036854775807 with none absent, but "
            r"9223372036854775803 of those ids never occur \(first: \[4, 5, 6, 7, 8\]\)",
        ),
    ],
)
def test_mmrec_errors(tmp_path: Path, header: str, rows: list[tuple], message: str) -> None:
    _write_inter(tmp_path, rows, header=header)
    with pytest.raises(DataError, match=message):
        read_mmrec(tmp_path)


def test_mmrec_id_map_errors(tmp_path: Path) -> None:
    _write_inter(tmp_path, INTER)
    maps = tmp_path / "i_id_mapping.csv"
    maps.write_text("asin\titemID\nB0\t0\nB1\t1\nB2\t2\nB3\t2\n")
    with pytest.raises(
        DataError,
        match=r"i_id_mapping\.csv: itemID must list every index "
        r"0\.\.3 exactly once, but 1 are absent and 1 repeated",
    ):
        read_mmrec(tmp_path)
    maps.write_text("asin\titemID\nB0\t0\nB1\t1\nB2\t2\n")
    with pytest.raises(DataError, match=r"itemID 3 is not in i_id_mapping\.csv"):
        read_mmrec(tmp_path)
    maps.write_text("asin\titemID\nB0\t0\nB1\t1\nB0\t2\nB3\t3\n")
    with pytest.raises(DataError, match="distinct raw id, but 0 are empty and 1 repeated"):
        read_mmrec(tmp_path)
    maps.write_text("item\tindex\nB0\t0\n")
    with pytest.raises(DataError, match=r"missing column\(s\) 'asin', 'itemID'.*tab-separated"):
        read_mmrec(tmp_path)
    # a valid map keeps leading zeros of raw ids and may cover items without interactions
    maps.write_text("asin\titemID\n0042\t4\n0007\t0\nB1\t1\nB2\t2\nB3\t3\n")
    dataset = read_mmrec(tmp_path)
    np.testing.assert_array_equal(dataset.item_ids, ["0007", "B1", "B2", "B3", "0042"])


def test_mmrec_feature_errors(tmp_path: Path) -> None:
    _write_inter(tmp_path, INTER)
    np.save(tmp_path / "image_feat.npy", np.ones((3, 2), dtype=np.float32))
    with pytest.raises(
        FeatureError,
        match=r"\(image_feat\.npy\).*image features have shape "
        r"\(3, 2\) but the dataset has 4 items",
    ):
        read_mmrec(tmp_path)
    values = np.ones((4, 2))
    values[1, 0] = np.inf
    np.save(tmp_path / "image_feat.npy", values)
    with pytest.raises(FeatureError, match=r"NaN/inf in 1 rows \(first items \[1\]\)"):
        read_mmrec(tmp_path)
    (tmp_path / "image_feat.npy").write_bytes(b"not numpy")
    with pytest.raises(FeatureError, match=r"image_feat\.npy: cannot be read as a numeric"):
        read_mmrec(tmp_path)
    np.save(tmp_path / "image_feat.npy", np.ones((4, 2), dtype=np.float64))
    assert read_mmrec(tmp_path).feature_set("mmrec").arrays["image"].dtype == np.float32


def test_write_mmrec_errors(tmp_path: Path) -> None:
    dataset = _mmrec_dataset()
    with pytest.raises(FeatureError, match="has no feature set 'sbert' \\(it has: clip\\)"):
        write_mmrec(dataset, tmp_path, feature_set="sbert")
    fused = FeatureSet(name="fused", arrays={"fused": np.zeros((5, 2), dtype=np.float32)})
    dataset.add_feature_set(fused)
    with pytest.raises(FeatureError, match=r"modalities \['fused'\] that the MMRec format"):
        write_mmrec(dataset, tmp_path, feature_set="fused")
    dataset.name = "a/b"
    with pytest.raises(DataError, match="rename the dataset"):
        write_mmrec(dataset, tmp_path)


# -- generic tables -------------------------------------------------------------------------------

# 6 users x 5 items, all pairs, in a scrambled order; raw ids sort differently from file order
USERS = ["dan", "bea", "fay", "al", "eve", "cat"]
ITEMS = ["i3", "i1", "i4", "i0", "i2"]


def _interactions() -> pd.DataFrame:
    """Every user with every item (a 5-core survivor), plus rows the reader must drop."""
    rng = np.random.default_rng(0)
    pairs = [(u, i) for u in USERS for i in ITEMS]
    rows = [pairs[k] for k in rng.permutation(len(pairs))]
    frame = pd.DataFrame(rows, columns=["user", "item"])
    frame["ts"] = rng.permutation(len(frame)).astype(np.int64) + 1000
    extra = pd.DataFrame(
        {
            "user": ["zed", "dan", None, "bea", "bea"],  # zed has 1 row: dropped by the 3-core
            "item": ["i0", "i9", "i1", "i0", "i0"],  # i9 has 1 row; None user: dropped
            "ts": [5, 6, 7, 9999, 1],  # bea/i0 repeats: the earliest (ts 1) is kept
        }
    )
    return pd.concat([frame, extra], ignore_index=True)


def _items_table() -> pd.DataFrame:
    # i2 is absent; i9 is not in the interactions after filtering
    return pd.DataFrame(
        {
            "asin": ["i0", "i1", "i3", "i4", "i9"],
            "title": ["zero", None, "three", "four", "nine"],
            "img": ["img/0.png", "img/1.png", None, "/abs/4.png", "img/9.png"],
        }
    )


def _read(path: Path, items_path: Path, **kwargs: object) -> Dataset:
    return read_table(
        path,
        time_col="ts",
        items_path=items_path,
        item_key="asin",
        text_col="title",
        image_col="img",
        k_core=3,
        **kwargs,
    )


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_read_table_filters_reindexes_and_attaches_the_catalog(tmp_path: Path, suffix: str) -> None:
    path, items_path = tmp_path / f"events{suffix}", tmp_path / "meta" / f"items{suffix}"
    items_path.parent.mkdir()
    for frame, target in ((_interactions(), path), (_items_table(), items_path)):
        if suffix == ".parquet":
            frame.to_parquet(target)
        else:
            frame.to_csv(target, sep="\t" if suffix == ".tsv" else ",", index=False)
    dataset = _read(path, items_path)
    assert dataset.name == "events"
    np.testing.assert_array_equal(dataset.user_ids, sorted(USERS))
    np.testing.assert_array_equal(dataset.item_ids, sorted(ITEMS))
    assert (dataset.n_users, dataset.n_items, dataset.n_interactions) == (6, 5, 30)
    # 5 interactions per user: 3 train, 1 valid, 1 test
    assert (dataset.train.nnz, dataset.valid.nnz, dataset.test.nnz) == (18, 6, 6)
    assert dataset.info["before_filtering"] == {"users": 7, "items": 6, "interactions": 32}
    assert dataset.info["after_filtering"] == {"users": 6, "items": 5, "interactions": 30}
    assert dataset.info["rows_read"] == 35
    assert dataset.info["rows_without_ids"] == 1
    assert dataset.info["repeated_pairs_dropped"] == 2
    assert (dataset.info["k_core"], dataset.info["split"], dataset.info["seed"]) == (
        3,
        "random",
        2022,
    )
    assert dataset.info["items_without_content"] == 1
    catalog = dataset.catalog
    assert catalog is not None
    assert catalog.texts == ["zero", "", "", "three", "four"]
    assert catalog.images == ["img/0.png", "img/1.png", None, None, "/abs/4.png"]
    assert catalog.image_path(0) == items_path.parent.resolve() / "img" / "0.png"
    assert catalog.image_path(4) == Path("/abs/4.png")
    again = _read(path, items_path)
    _assert_same_interactions(dataset, again)


def test_read_table_is_the_same_for_csv_and_parquet(tmp_path: Path) -> None:
    frame = _interactions()
    frame.to_csv(tmp_path / "events.csv", index=False)
    frame.to_parquet(tmp_path / "events.parquet")
    _assert_same_interactions(
        read_table(tmp_path / "events.csv", k_core=3),
        read_table(tmp_path / "events.parquet", k_core=3),
    )


def test_read_table_split_follows_the_rules(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    _interactions().to_csv(path, index=False)
    dataset = read_table(path, time_col="ts", k_core=3, split="temporal")
    # bea's kept i0 row is the earliest (ts 1) so it is in train, not her latest (ts 9999)
    bea, i0 = list(dataset.user_ids).index("bea"), list(dataset.item_ids).index("i0")
    assert dataset.train[bea, i0] == 1.0
    raw = _interactions().dropna().sort_values("ts").drop_duplicates(["user", "item"])
    raw = raw[raw["user"].isin(USERS) & raw["item"].isin(ITEMS)]
    for user, group in raw.groupby("user"):
        u = list(dataset.user_ids).index(user)
        assert dataset.item_ids[dataset.test[u].indices[0]] == group["item"].iloc[-1]
        assert dataset.item_ids[dataset.valid[u].indices[0]] == group["item"].iloc[-2]
    loo = read_table(path, time_col="ts", k_core=3, split="loo")
    assert (loo.train.nnz, loo.valid.nnz, loo.test.nnz) == (18, 6, 6)
    seeded = [read_table(path, k_core=3, seed=s) for s in (1, 1, 2)]
    assert (seeded[0].test != seeded[1].test).nnz == 0
    assert (seeded[0].test != seeded[2].test).nnz > 0


def test_read_table_without_filtering_matches_random_split(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    pd.DataFrame({"u": [3, 3, 3, 10, 10, 10, 2, 2, 2], "i": [7, 8, 9, 7, 8, 9, 7, 8, 9]}).to_csv(
        path, index=False
    )
    dataset = read_table(path, user_col="u", item_col="i", k_core=1, seed=4)
    np.testing.assert_array_equal(dataset.user_ids, ["10", "2", "3"])  # sorted as strings
    assert dataset.catalog is None
    labels = random_split(np.array([2, 2, 2, 0, 0, 0, 1, 1, 1]), seed=4)
    frame = dataset.interaction_frame()
    for split, matrix in ((TRAIN, dataset.train), (VALID, dataset.valid), (TEST, dataset.test)):
        assert matrix.nnz == int(np.sum(labels == split)) == int(np.sum(frame["split"] == split))


def test_read_table_errors(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    _interactions().to_csv(path, index=False)
    (tmp_path / "events.json").write_text("{}")
    with pytest.raises(
        DataError,
        match=r"events\.json: unsupported table file '\.json'; use one "
        r"of \.csv, \.tsv, \.parquet",
    ):
        read_table(tmp_path / "events.json")
    with pytest.raises(
        DataError,
        match=r"missing column\(s\) 'uid' \(found: 'user', 'item', "
        r"'ts'\); pass user_col=",
    ):
        read_table(path, user_col="uid")
    with pytest.raises(DataError, match="a temporal split needs a timestamp column"):
        read_table(path, split="temporal", k_core=3)
    with pytest.raises(
        DataError,
        match=r"no interactions survive the 7-core filter \(32 "
        r"before\); lower k_core",
    ):
        read_table(path, k_core=7)
    with pytest.raises(DataError, match="does not exist"):
        read_table(tmp_path / "absent.csv")
    items = tmp_path / "items.csv"
    _items_table().to_csv(items, index=False)
    with pytest.raises(
        DataError,
        match=r"items\.csv: missing column\(s\) 'text', 'image'.*"
        r"image_col=None",
    ):
        read_table(path, k_core=3, items_path=items, item_key="asin")
    pd.DataFrame({"item": ["i0", "i0"], "text": ["a", "b"]}).to_csv(items, index=False)
    with pytest.raises(DataError, match=r"1 item ids appear in several rows \(first: \['i0'\]\)"):
        read_table(path, k_core=3, items_path=items, image_col=None)
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match=r"broken\.parquet: cannot be read as Parquet"):
        read_table(tmp_path / "broken.parquet")
    pd.DataFrame({"user": ["a"], "item": ["b"], "ts": ["yesterday-ish"]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="holds neither numbers nor dates"):
        read_table(path, time_col="ts", k_core=1)


def test_read_table_accepts_date_strings(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    days = pd.date_range("2024-01-01", periods=9, freq="D").strftime("%Y-%m-%d")
    pd.DataFrame({"user": ["a"] * 9, "item": [f"i{k}" for k in range(9)], "ts": days[::-1]}).to_csv(
        path, index=False
    )
    dataset = read_table(path, time_col="ts", k_core=1, split="temporal")
    assert dataset.item_ids[dataset.test[0].indices[0]] == "i0"  # the latest day
    assert dataset.item_ids[dataset.valid[0].indices[0]] == "i1"


# -- dispatch -------------------------------------------------------------------------------------


def test_load_dataset_dispatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    saved = _mmrec_dataset()
    saved.save(tmp_path / "saved")
    assert sorted(load_dataset(tmp_path / "saved").features) == ["clip"]
    write_mmrec(saved, tmp_path / "mmrec")
    _assert_same_interactions(load_dataset(str(tmp_path / "mmrec")), saved)
    _interactions().to_csv(tmp_path / "events.csv", index=False)
    assert load_dataset(tmp_path / "events.csv").info["k_core"] == 5
    demo = types.ModuleType("lmmrec.data.demo")
    demo.load_demo = lambda: saved  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "lmmrec.data.demo", demo)
    assert load_dataset("demo") is saved
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match=r"unsupported file '\.txt'; expected 'demo', an lmmrec"):
        load_dataset(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"holds neither dataset\.json nor a \.inter file"):
        load_dataset(tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist; expected"):
        load_dataset(tmp_path / "absent")


@pytest.mark.real_data
@pytest.mark.skipif(not (AMAZON / "baby").is_dir(), reason="needs ../shared/data/amazon/baby")
def test_read_real_baby() -> None:
    start = time.perf_counter()
    dataset = read_mmrec(AMAZON / "baby")
    seconds = time.perf_counter() - start
    assert (dataset.n_users, dataset.n_items, dataset.n_interactions) == (19_445, 7_050, 160_792)
    assert (dataset.train.nnz, dataset.valid.nnz, dataset.test.nnz) == (119_674, 20_559, 20_559)
    assert dataset.user_ids[0] == "A1HK2FQW6KXQB2"
    assert dataset.item_ids[0] == "097293751X"
    assert seconds < 2.0  # about 0.1 s; a loose bound against a slow parser path
