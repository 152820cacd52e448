"""Run configuration: defaults, YAML layers, overrides and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmmrec.errors import ConfigError
from lmmrec.training.config import TrainConfig, apply_overrides, load_run_config


def test_defaults_follow_mmrec() -> None:
    config = TrainConfig()
    assert (config.batch_size, config.lr, config.valid_metric) == (2048, 1e-3, "recall@20")
    assert config.ks == [5, 10, 20, 50]


def test_overrides_reach_the_right_section() -> None:
    config = load_run_config(
        None,
        ["model=lightgcn", "lr=0.01", "n_layers=2", "train.ks=[10, 5]", "model.reg_weight=1e-3"],
    )
    assert config.model == "lightgcn"
    assert config.train.lr == 0.01
    assert config.train.ks == [5, 10, 20]  # the selection metric's K is always reported
    assert config.model_params == {"n_layers": 2, "reg_weight": 1e-3}


def test_yaml_file_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(
        "model: bpr\ntrain:\n  epochs: 7\n  lr: 0.5\nmodel_params:\n  embedding_size: 8\n"
    )
    config = load_run_config(path, ["lr=0.25"])
    assert (config.train.epochs, config.train.lr) == (7, 0.25)
    assert config.model_params == {"embedding_size": 8}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.learning_rate=1"], "learning_rate"),
        (["lr=-1"], "lr"),
        (["valid_metric=auc@3"], "metric"),
        (["noequals"], "key=value"),
        (["a.b.c=1"], "not understood"),
    ],
)
def test_bad_overrides_are_clear_errors(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_run_config(None, overrides)


def test_a_bare_key_that_names_nothing_lists_settings_and_hyper_parameters() -> None:
    """A mistyped training setting reached the model's check, which listed only its own keys."""
    with pytest.raises(ConfigError) as caught:
        load_run_config(None, ["model=bpr", "epoch=3"])
    message = str(caught.value)
    assert "unknown setting 'epoch' (did you mean 'epochs'?)" in message
    assert all(f" {key}," in message for key in ("lr", "patience", "embedding_size"))
    assert load_run_config(None, ["model=bpr", "reg_weight=0.5"]).model_params == {
        "reg_weight": 0.5
    }


def test_bad_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_run_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_run_config(tmp_path / "list.yaml")
    (tmp_path / "extra.yaml").write_text("modle: bpr\n")
    with pytest.raises(ConfigError, match="modle"):
        load_run_config(tmp_path / "extra.yaml")


def test_apply_overrides_does_not_mutate_its_input() -> None:
    data = {"train": {"lr": 1.0}}
    apply_overrides(data, ["lr=2"])
    assert data == {"train": {"lr": 1.0}}


def test_a_model_default_learning_rate_applies_only_where_none_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lmmrec.experiments.runner import resolved_config
    from lmmrec.models import registry
    from lmmrec.training.config import RunConfig

    monkeypatch.setattr(registry.get("lightgcn"), "default_lr", 5e-3)
    assert load_run_config(None, ["model=lightgcn"]).train.lr == 5e-3
    assert load_run_config(None, ["model=lightgcn", "lr=0.01"]).train.lr == 0.01
    assert load_run_config(None, ["model=lightgcn", "lr=0.001"]).train.lr == 1e-3  # set = kept
    assert load_run_config(None, ["model=bpr"]).train.lr == 1e-3  # no default_lr: TrainConfig's
    shared = TrainConfig(epochs=5)
    assert RunConfig(model="lightgcn", train=shared).train.lr == 5e-3
    assert shared.lr == 1e-3  # the caller's section is not changed for its other runs
    # what a run records (and the experiment runner hashes into its name) is the rate it used
    resolved = resolved_config({"model": "lightgcn", "train": {"epochs": 5}})
    assert resolved["train"]["lr"] == 5e-3
    assert RunConfig.model_validate(resolved).train.lr == 5e-3
