"""Reports from a tiny experiment: tables, significance marks, plots embedded in the HTML."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from experiment_helpers import FEATURES, tiny_spec

from lmmrec.data.features import FeatureSet
from lmmrec.data.splits import TEST
from lmmrec.experiments import load_experiment, run_experiment
from lmmrec.experiments.report import TEST_USERS, build_report, to_latex, write_report
from lmmrec.training import evaluate_run_pools
from planted import planted_dataset, with_cold_items

pytest.importorskip("matplotlib")
METRICS = ["recall@10", "recall@20", "ndcg@10", "ndcg@20"]


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables, self.images, self.external, self.strong = 0, [], [], 0
        self.cells: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.tables += tag == "table"
        self.strong += tag == "strong"
        self._in_cell = tag in ("td", "th") or (self._in_cell and tag in ("strong", "sup"))
        if tag == "img":
            self.images.append(values.get("src") or "")
        for key in ("href", "src"):
            if (values.get(key) or "").startswith(("http:", "https:", "//")):
                self.external.append(values[key])
        if tag in ("script", "link"):
            self.external.append(tag)

    def handle_data(self, data: str) -> None:
        if self._in_cell:
            self.cells.append(data)


def _planted_per_user(results: pd.DataFrame) -> None:
    """Planted test_users.npz (replacing the trainer's): VBPR far above BPR, so the marks are
    certain whatever two epochs on tiny data gave."""
    rng = np.random.default_rng(0)
    for row in results.itertuples():
        path = Path(row.run_dir) / TEST_USERS
        level = 0.2 if row.model == "bpr" else 0.6
        values = {m: np.clip(rng.normal(level, 0.1, 60), 0, 1) for m in METRICS}
        np.savez(path, users=np.arange(60, dtype=np.int64), **values)


@pytest.fixture(scope="module")
def finished(tiny_source: str, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    out = tmp_path_factory.mktemp("experiment")
    spec = tiny_spec(tiny_source, out, description="A tiny report test.")
    result = run_experiment(spec, progress=False)
    assert result.counts()["done"] == 8
    _planted_per_user(result.results)
    return load_experiment(spec), out


def test_report_tables_select_on_validation_and_mark_the_best(finished: tuple) -> None:
    experiment, _ = finished
    report = build_report(experiment, plots=False)
    (table,) = report.tables
    assert list(table.rows["model"]) == ["bpr", "vbpr"]
    assert table.baseline == 0  # the first model without content
    for row in table.rows.itertuples():
        assert row.seeds == 2 and row.points == 2
    # paired tests: one comparison (vbpr vs bpr) per metric, Holm over the 4
    c = table.comparisons
    assert len(c) == 4 and (c["n"] == 60).all()
    assert (c["t.holm"] >= c["t.p"]).all() and (c["t.holm"] < 0.05).all()
    assert (c["w.holm"] < 0.05).all()


def test_report_files_html_is_self_contained(finished: tuple, tmp_path: Path) -> None:
    experiment, _ = finished
    report = build_report(experiment)
    paths = write_report(report, tmp_path / "report")
    page = _Page()
    page.feed(paths["html"].read_text())
    assert page.tables >= 2  # results + significance
    assert not page.external
    assert len(page.images) == 3  # bars, validation curves, training time
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert page.strong >= 4  # the best value of each metric column
    assert "†‡" in "".join(page.cells)  # significance marks on the table
    markdown = paths["md"].read_text()
    assert "| model | encoder | paradigm | R@10 | R@20 | N@10 | N@20 |" in markdown
    assert "**" in markdown and "baseline" in markdown and "A tiny report test." in markdown
    assert (tmp_path / "report" / "figures" / "time.png").is_file()
    latex = paths["tex"].read_text()
    assert "\\toprule" in latex and "\\textbf{" in latex and "$\\pm$" in latex
    assert "^{\\dagger\\ddagger}" in latex


def test_report_without_per_user_metrics_says_so(finished: tuple, tmp_path: Path) -> None:
    experiment, out = finished
    results = pd.read_parquet(out / "results.parquet")
    hidden = []
    for run_dir in results["run_dir"]:
        path = Path(run_dir) / TEST_USERS
        hidden.append(path.rename(path.with_suffix(".hidden")))
    try:
        report = build_report(experiment, plots=False)
    finally:
        for path in hidden:
            path.rename(path.with_suffix(".npz"))
    assert report.tables[0].comparisons["t.p"].isna().all()
    assert any("not tested" in note for note in report.notes)
    assert "†" not in to_latex(report)


@pytest.fixture(scope="module")
def with_new_items(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """BPR and VBPR, one seed each, on planted data whose items 0, 5 and 10 are new (their
    training interactions moved to test)."""
    root = tmp_path_factory.mktemp("cold")
    dataset = with_cold_items(planted_dataset(), [0, 5, 10], to=TEST)
    rng = np.random.default_rng(0)
    features = {"image": rng.normal(size=(dataset.n_items, 8)).astype(np.float32)}
    dataset.add_feature_set(FeatureSet(FEATURES, features))
    dataset.save(root / "data")
    spec = tiny_spec(str(root / "data"), root / "experiment", seeds=[1])
    spec["models"] = {name: {"params": {"embedding_size": 8}} for name in ("bpr", "vbpr")}
    assert run_experiment(spec, progress=False).counts()["done"] == 2
    return load_experiment(spec), root


def test_report_pools_table_from_cached_cold_start_evaluations(
    with_new_items: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    experiment, _ = with_new_items
    report = build_report(experiment, plots=False, pools=True)
    (table,) = report.tables
    pools = table.pools
    assert pools is not None and list(pools["model"]) == ["bpr", "vbpr"]
    assert (pools["items.cold"] == 3).all() and (pools["items.warm"] == 37).all()
    bpr, vbpr = pools.iloc[0], pools.iloc[1]
    assert np.isnan(bpr["cold content"]) and 0 <= vbpr["cold content"] <= 1
    # BPR ran without features: no map; VBPR's places the cold items in the full ranking too
    assert np.isnan(bpr["all +map"]) and 0 <= vbpr["all +map"] <= 1
    # the all column is the run's own test metric
    assert bpr["all"] == pytest.approx(table.rows.iloc[0]["recall@20.mean"])
    for run_dir in table.rows["run_dirs"].sum():
        assert (Path(run_dir) / "pools.json").is_file()

    def no_reload(run_dir: Path) -> None:
        raise AssertionError(f"{run_dir} evaluated again")

    monkeypatch.setattr("lmmrec.training.run.load_run", no_reload)
    again = build_report(experiment, plots=False, pools=True)
    pd.testing.assert_frame_equal(again.tables[0].pools, pools)
    monkeypatch.undo()
    # a pools.json written by an lmmrec before the mapped placement is evaluated again
    stored = Path(table.rows.iloc[1]["run_dirs"][0]) / "pools.json"
    record = json.loads(stored.read_text())
    old = {"best": record["best"], "splits": {"test": record["splits"]["test"][:2]}}
    stored.write_text(json.dumps(old))
    results = evaluate_run_pools(stored.parent, ("test",), cached=True)["test"]
    assert "mapped" in {r.scored_by for r in results}
    assert json.loads(stored.read_text())["version"] == 2
    paths = write_report(again, tmp_path)
    markdown = paths["md"].read_text()
    assert (
        "| model | encoder | paradigm | all | all +content | all +map | warm | cold | "
        "cold content | cold map |"
    ) in markdown
    assert "(items: 40 all, 37 warm, 3 cold)" in markdown
    assert "item cold start" in markdown
    page = _Page()
    page.feed(paths["html"].read_text())
    assert page.tables >= 3  # results, significance, pools
    assert paths["tex"].read_text().count("\\begin{table}") == 2


def test_report_pools_without_cold_items_says_so(finished: tuple) -> None:
    experiment, _ = finished
    report = build_report(experiment, plots=False, pools=True)
    assert report.tables[0].pools is None
    assert any("no test interaction is with a cold item" in note for note in report.notes)


def test_a_run_that_cannot_be_evaluated_is_left_out_with_its_error(
    with_new_items: tuple, tmp_path: Path
) -> None:
    experiment, root = with_new_items
    report = build_report(experiment, plots=False, pools=True)
    run_dir = Path(report.tables[0].rows.iloc[1]["run_dirs"][0])  # VBPR's
    (run_dir / "pools.json").unlink()
    moved = root / "moved"
    (root / "data").rename(moved)
    try:
        again = build_report(experiment, plots=False, pools=True)
    finally:
        moved.rename(root / "data")
    (note,) = [n for n in again.notes if "left out" in n]
    assert str(run_dir) in note and "does not exist" in note
    pools = again.tables[0].pools
    assert pools is not None and np.isnan(pools.iloc[1]["cold content"])
    assert pools.iloc[0]["all"] == report.tables[0].pools.iloc[0]["all"]  # BPR's, from its cache
