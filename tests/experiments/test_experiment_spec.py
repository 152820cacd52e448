"""Experiment files: grid expansion and the errors of bad files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from experiment_helpers import FEATURES, tiny_spec

from lmmrec.errors import ConfigError
from lmmrec.experiments import load_experiment
from lmmrec.training.config import RunConfig


def test_grid_expansion_crosses_everything(tmp_path: Path) -> None:
    spec = tiny_spec("demo-folder", tmp_path)
    spec["datasets"] = {"a": "a-folder", "b": "b-folder"}
    spec["models"]["vbpr"]["datasets"] = {"b": {"grid": {"reg_weight": [1.0, 0.1, 0.01]}}}
    cells = load_experiment(spec).cells
    # per dataset: bpr 2 lrs + vbpr (2 on a, 3 on b) reg weights; x 2 seeds
    assert len(cells) == (2 + 2) * 2 + (2 + 3) * 2
    b_vbpr = [c for c in cells if c.dataset == "b" and c.model == "vbpr"]
    assert sorted({c.config["model_params"]["reg_weight"] for c in b_vbpr}) == [0.01, 0.1, 1.0]
    for cell in cells:
        config = RunConfig.model_validate(cell.config)
        assert config.train.seed == cell.seed
        assert config.train.valid_metric == "recall@20"
        assert {10, 20} <= set(config.train.ks)
        assert config.model_params["embedding_size"] == 8
    bpr = [c for c in cells if c.model == "bpr"]
    # a bare `lr` is a training setting, as on the `lmmrec train` command line
    assert sorted({c.config["train"]["lr"] for c in bpr}) == [0.01, 0.05]
    assert all(c.encoder is None and c.paradigm is None for c in bpr)
    vbpr = [c for c in cells if c.model == "vbpr"]
    assert all(c.encoder == FEATURES and c.paradigm == "frozen" for c in vbpr)
    assert all(c.config["features"] == FEATURES for c in vbpr)
    # grid points differ in their configs, seeds within a point too
    keys = {(c.dataset, c.model, c.point_key, c.seed) for c in cells}
    assert len(keys) == len(cells)


def test_precedence_and_explicit_prefixes(tmp_path: Path) -> None:
    spec = tiny_spec("x", tmp_path, train={"epochs": 5, "lr": 0.002})
    spec["models"] = {
        "bpr": {
            "train": {"epochs": 7},
            "grid": {"train.batch_size": [32], "model.reg_weight": [0.5]},
            "datasets": {"tiny": {"train": {"epochs": 9}}},
        }
    }
    (cell,) = [c for c in load_experiment(spec).cells if c.seed == 1]
    assert cell.config["train"]["epochs"] == 9  # dataset override > model > shared
    assert cell.config["train"]["lr"] == 0.002
    assert cell.config["train"]["batch_size"] == 32
    assert cell.config["model_params"]["reg_weight"] == 0.5


def test_models_as_a_list_and_variables(tmp_path: Path) -> None:
    spec = tiny_spec("${root}/tiny", tmp_path, models=["bpr", "lightgcn"])
    spec["variables"] = {"root": "/data"}
    experiment = load_experiment(spec, variables={"root": "/elsewhere"})
    assert {c.config["dataset"] for c in experiment.cells} == {"/elsewhere/tiny"}
    assert {c.model for c in experiment.cells} == {"bpr", "lightgcn"}


def test_paradigms_follow_what_each_encoder_offers(tmp_path: Path) -> None:
    spec = tiny_spec("x", tmp_path, paradigms=["frozen", "finetuned", "end2end"])
    spec["encoders"] = {
        "mmrec": {"features": "mmrec"},  # stored features only: frozen
        "dual": {
            "features": "dual",
            "finetuned": {"features": "dual-ft"},
            "encoder": {"spec": "dual:default", "lr": 1e-4},
        },
    }
    # an end2end section overrides the model's grid in end-to-end cells only
    spec["models"] = {"vbpr": {"end2end": {"params": {"embedding_size": 4}}}}
    spec["seeds"] = [1]
    cells = load_experiment(spec).cells
    assert [(c.encoder, c.paradigm) for c in cells] == [
        ("mmrec", "frozen"),
        ("dual", "frozen"),
        ("dual", "finetuned"),
        ("dual", "end2end"),
    ]
    by = {(c.encoder, c.paradigm): c.config for c in cells}
    assert by["dual", "finetuned"]["features"] == "dual-ft"
    assert "features" not in by["dual", "end2end"]
    assert by["dual", "end2end"]["encoder"]["spec"] == "dual:default"
    assert by["dual", "end2end"]["paradigm"] == "end2end"
    assert by["dual", "end2end"]["model_params"]["embedding_size"] == 4
    assert by["dual", "frozen"]["model_params"] == {}


def test_an_id_only_model_runs_beside_the_features_it_names(tmp_path: Path) -> None:
    """With `encoders:` BPR trains beside their stored features (to place new items by a map),
    in the frozen and fine-tuned cells, never end to end; without, once and without features."""
    spec = tiny_spec("x", tmp_path, paradigms=["frozen", "finetuned", "end2end"], seeds=[1])
    spec["encoders"] = {
        "dual": {
            "features": "dual",
            "finetuned": {"features": "dual-ft"},
            "encoder": {"spec": "dual:default", "lr": 1e-4},
        }
    }
    spec["models"] = {"bpr": {"encoders": ["dual"]}, "lightgcn": {}}
    cells = load_experiment(spec).cells
    assert [(c.model, c.encoder, c.paradigm, c.config.get("features")) for c in cells] == [
        ("bpr", "dual", "frozen", "dual"),
        ("bpr", "dual", "finetuned", "dual-ft"),
        ("lightgcn", None, None, None),
    ]


def _error(spec: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        load_experiment(spec)
    return str(caught.value)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"seed": [1]}, ["seed", "did you mean 'seeds'", "known:"]),
        ({"models": {"vbrp": {}}}, ["unknown model 'vbrp'", "did you mean 'vbpr'", "lightgcn"]),
        ({"models": {"bpr": {"grdi": {}}}}, ["models.bpr", "'grdi'", "did you mean 'grid'"]),
        ({"models": {"bpr": {"params": {"reg_wieght": 1}}}}, ["'reg_wieght'", "reg_weight"]),
        ({"models": {"bpr": {"grid": {"n_layer": [1]}}}}, ["grid key 'n_layer'", "reg_weight"]),
        ({"models": {"bpr": {"train": {"epoch": 3}}}}, ["'epoch'", "did you mean 'epochs'"]),
        ({"models": {"bpr": {"params": {"reg_weight": -1}}}}, ["reg_weight", "bpr"]),
        ({"models": {"vbpr": {"encoders": ["clip"]}}}, ["unknown encoder 'clip'", FEATURES]),
        ({"models": {"bpr": {"datasets": {"baby": {}}}}}, ["unknown dataset 'baby'", "tiny"]),
        ({"paradigms": ["e2e"]}, ["paradigms", "e2e"]),
        ({"metrics": ["recal@20"]}, ["recal@20", "recall"]),
        ({"select": "ndcg@x"}, ["ndcg@x"]),
        ({"datasets": {"tiny": "${nowhere}"}}, ["unknown variable ${nowhere}", "--var"]),
        ({"baseline": {"model": "lightgcn"}}, ["baseline.model", "'lightgcn'"]),
        ({"encoders": {"x": {"features": "x", "extract": "clop:/w"}}}, ["unknown encoder 'clop'"]),
        ({"train": {"valid_metric": "ndcg@10"}}, ["select"]),
        ({"models": {"bpr": {"grid": {"seed": [1, 2]}}}}, ["seeds"]),
        ({"encoders": {}}, ["vbpr needs item features"]),
    ],
)
def test_validation_errors_name_the_key_and_the_known_values(
    tmp_path: Path, change: dict[str, Any], expected: list[str]
) -> None:
    spec = tiny_spec("x", tmp_path)
    spec.update(change)
    message = _error(spec)
    for text in expected:
        assert text in message, message


def test_a_cell_that_is_not_a_valid_run_names_the_cell(tmp_path: Path) -> None:
    spec = tiny_spec("x", tmp_path, paradigms=["end2end"])
    spec["encoders"] = {"dual": {"end2end": {"features": "oops"}, "encoder": {"spec": "dual"}}}
    spec["models"] = {"vbpr": {}}
    message = _error(spec)
    assert "cell [x vbpr dual end2end seed=1]" in message or "cell [tiny vbpr" in message
    assert "features" in message


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(tiny_spec("x", tmp_path, seed=3)))
    with pytest.raises(ConfigError, match=str(path)):
        load_experiment(path)
    path.write_text("datasets: [unclosed\n")
    with pytest.raises(ConfigError, match=r"exp\.yaml"):
        load_experiment(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_experiment(tmp_path / "missing.yaml")
