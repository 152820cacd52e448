"""``lmmrec demo``: the packaged experiment files, their cells, the rows chosen on validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmmrec.data.features import FeatureSet
from lmmrec.data.splits import TEST
from lmmrec.errors import ConfigError
from lmmrec.experiments import load_experiment
from lmmrec.experiments.spec import builtin_experiments, builtin_path
from lmmrec.training import RunConfig, TrainConfig, evaluate_run_pools, train
from lmmrec.training.demo import (
    DEMO_ENCODER,
    FINETUNED_FEATURES,
    FROZEN_FEATURES,
    PARADIGM_MODELS,
    DemoRow,
    demo_experiment,
    demo_rows,
    rank_new_items,
)
from planted import planted_dataset, with_cold_items

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name", ["demo", "defaults-demo"])
def test_configs_hold_identical_copies_of_the_packaged_experiments(name: str) -> None:
    # the package's file is what `lmmrec demo` runs; configs/ must not drift from it
    assert name in builtin_experiments()
    assert (CONFIGS / f"{name}.yaml").read_bytes() == builtin_path(name).read_bytes()


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda path: path.stem)
def test_every_experiment_under_configs_validates_and_expands(path: Path) -> None:
    # loading validates every key, model, grid value and cell (datasets are opened only to run)
    experiment = load_experiment(path)
    assert experiment.cells and experiment.spec.name == path.stem


def test_a_builtin_experiment_loads_by_name_and_an_unknown_name_lists_them(tmp_path: Path) -> None:
    assert load_experiment("demo").path == builtin_path("demo")
    with pytest.raises(ConfigError, match="built-in experiments: defaults-demo, demo"):
        load_experiment(str(tmp_path / "nothing.yaml"))


def test_the_demo_crosses_bpr_and_each_model_with_three_paradigms_and_two_learning_rates(
    tmp_path: Path,
) -> None:
    assert demo_experiment().output_dir == Path("runs/demo")  # `lmmrec experiment report demo`
    experiment = demo_experiment(tmp_path / "out")
    assert experiment.output_dir == tmp_path / "out"
    groups = list(dict.fromkeys((c.model, c.paradigm) for c in experiment.cells))
    assert groups == [
        ("bpr", None),
        *((m, p) for m in PARADIGM_MODELS for p in ("frozen", "finetuned", "end2end")),
    ]
    for model, paradigm in groups:
        rates = [
            c.point["lr"] for c in experiment.cells if (c.model, c.paradigm) == (model, paradigm)
        ]
        assert len(rates) == 2 and len(set(rates)) == 2  # chosen on validation, not fixed
    by_paradigm = {c.paradigm: c.config for c in experiment.cells if c.model == "vbpr"}
    assert by_paradigm["frozen"]["features"] == FROZEN_FEATURES
    assert by_paradigm["finetuned"]["features"] == FINETUNED_FEATURES
    assert by_paradigm["end2end"]["encoder"]["spec"] == DEMO_ENCODER
    # early stopping decides: no epoch cap below TrainConfig's
    assert all("epochs" not in c.config["train"] for c in experiment.cells)


def test_the_demo_keeps_bpr_and_the_chosen_models_and_caps_epochs(tmp_path: Path) -> None:
    experiment = demo_experiment(tmp_path, models=("freedom",), epochs=3)
    assert {c.model for c in experiment.cells} == {"bpr", "freedom"}
    assert {c.config["train"]["epochs"] for c in experiment.cells} == {3}
    zoo = demo_experiment(tmp_path, models=("lightgcn",), zoo=True)
    assert [c.model for c in zoo.cells] == ["bpr", "lightgcn"]
    assert all(c.point == {} for c in zoo.cells)  # the zoo is every model with its defaults


def test_demo_rows_take_the_point_with_the_best_validation_not_the_best_test(
    tmp_path: Path,
) -> None:
    experiment = demo_experiment(tmp_path, models=("vbpr",))
    records = []
    for lr, valid, test in [(1e-3, 0.30, 0.20), (5e-3, 0.25, 0.29)]:
        records.append(
            {
                "state": "done",
                "dataset": "shop",
                "model": "vbpr",
                "encoder": "minilm-effnet",
                "paradigm": "frozen",
                "point": json.dumps({"lr": lr}),
                "seed": 2022,
                "run_dir": f"runs/vbpr-{lr}",
                "best_epoch": 7,
                "epochs_run": 27,
                "seconds": 3.5,
                "valid.recall@20": valid,
                "test.recall@20": test,
                "test.ndcg@20": test / 2,
            }
        )
    (row,) = demo_rows(experiment, pd.DataFrame(records))
    assert (row.model, row.paradigm, row.point) == ("vbpr", "frozen", {"lr": 1e-3})
    assert row.test == {"ndcg@20": 0.10, "recall@20": 0.20}
    assert (row.best_epoch, row.epochs, row.seconds, row.run_dir) == (7, 27, 3.5, "runs/vbpr-0.001")


def test_the_new_items_column_places_them_from_content_where_the_model_can(
    tmp_path: Path,
) -> None:
    """VBPR's row gets the cold pool placed from content, BPR's the cold pool by its vectors;
    each run's pools are kept in its pools.json for the next demo."""
    dataset = with_cold_items(planted_dataset(), [0, 5, 10], to=TEST)
    rng = np.random.default_rng(0)
    dataset.add_feature_set(FeatureSet("f", {"v": rng.random((dataset.n_items, 6), "float32")}))
    dataset.save(tmp_path / "data")
    rows = []
    for model in ("bpr", "vbpr"):
        config = RunConfig(
            model=model,
            dataset=str(tmp_path / "data"),
            features="f" if model == "vbpr" else None,
            model_params={"embedding_size": 8},
            output_dir=str(tmp_path / "runs"),
            name=model,
            train=TrainConfig(epochs=2, batch_size=64, ks=[5, 20]),
        )
        run_dir = train(config).run_dir
        rows.append(DemoRow(model, "-", {}, 2, 1, 0.1, run_dir=str(run_dir)))
    rank_new_items(rows)
    for row in rows:
        results = evaluate_run_pools(Path(row.run_dir), ("test",))["test"]
        expected = "content" if row.model == "vbpr" else "learned"
        shown = next(r for r in results if r.pool == "cold" and r.scored_by == expected)
        assert row.new_items == shown.metrics
        assert (Path(row.run_dir) / "pools.json").is_file()
