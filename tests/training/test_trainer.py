"""The trainer: learning, early stopping, checkpoints, resume, NaN handling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lmmrec.data.dataset import Dataset
from lmmrec.data.features import FeatureSet
from lmmrec.errors import ConfigError, TrainingError
from lmmrec.io import read_json, write_json
from lmmrec.training import RunConfig, TrainConfig, Trainer, evaluate_run, train
from lmmrec.training.run import build_model
from planted import planted_dataset, with_cold_items


def _config(tmp_path: Path, **train: object) -> RunConfig:
    settings = {"epochs": 30, "batch_size": 64, "lr": 0.05, "patience": 30, "ks": [5, 10]}
    settings.update(train)
    return RunConfig(
        model="bpr",
        output_dir=str(tmp_path),
        name="run",
        model_params={"embedding_size": 16},
        train=TrainConfig(**settings),
    )


def _trainer(dataset: Dataset, config: RunConfig, run_dir: Path | None) -> Trainer:
    return Trainer(build_model(dataset, config, {}), dataset, config.train, run_dir)


@pytest.mark.parametrize("model", ["bpr", "lightgcn"])
def test_training_learns_the_planted_structure(
    model: str, tiny_dataset: Dataset, tmp_path: Path
) -> None:
    config = _config(tmp_path).model_copy(update={"model": model, "model_params": {}})
    untrained = _trainer(tiny_dataset, config, None).evaluate("valid")["recall@10"]
    result = train(config, dataset=tiny_dataset)
    assert result.fit.valid["recall@10"] > untrained + 0.1
    assert result.fit.valid["recall@10"] > 0.4  # 10 of 40 items, 80% of them in the user's group
    for name in ("config.json", "run.json", "metrics.json", "best.pt", "checkpoint.pt", "log.txt"):
        assert (result.run_dir / name).is_file(), name
    metrics = read_json(result.run_dir / "metrics.json")
    assert metrics["best_epoch"] == result.fit.best_epoch
    assert len(metrics["history"]) == result.fit.epochs_run
    # validation selects; test is ranked once, after training, at the best epoch's weights
    assert not any("test" in record for record in metrics["history"])
    assert metrics["valid"] == metrics["history"][result.fit.best_epoch - 1]["valid"]
    assert set(metrics["time"]) == {"train", "valid", "test", "checkpoint"}
    per_user = np.load(result.run_dir / "test_users.npz", allow_pickle=False)
    assert per_user["users"].shape == per_user["recall@10"].shape
    assert float(per_user["recall@10"].mean()) == pytest.approx(result.fit.test["recall@10"])


def test_early_stopping_stops_after_patience(tiny_dataset: Dataset, tmp_path: Path) -> None:
    # lr tiny: validation never improves after the first evaluation -> stop at 1 + patience
    result = train(_config(tmp_path, lr=1e-9, patience=3, epochs=50), dataset=tiny_dataset)
    assert result.fit.stopped_by == "early_stopping"
    assert result.fit.epochs_run == result.fit.best_epoch + 3


def test_patience_counts_epochs_when_validation_is_sparser(
    tiny_dataset: Dataset, tmp_path: Path
) -> None:
    # validated every 2 epochs with patience 3: stop at the first evaluation 3+ epochs after
    # the best (epoch 2), that is at epoch 6, not after 3 more evaluations (epoch 8)
    config = _config(tmp_path, lr=1e-9, patience=3, epochs=50, eval_every=2)
    result = train(config, dataset=tiny_dataset)
    assert result.fit.stopped_by == "early_stopping"
    assert (result.fit.best_epoch, result.fit.epochs_run) == (2, 6)
    validated = [record["epoch"] for record in result.fit.history if "valid" in record]
    assert validated == [2, 4, 6]


@pytest.mark.parametrize("every", [1, 2])
def test_interrupted_run_resumes_to_the_same_result(
    tiny_dataset: Dataset, tmp_path: Path, every: int
) -> None:
    settings = {"epochs": 6, "checkpoint_every_epochs": every, "checkpoint_every_seconds": 0}
    straight = train(_config(tmp_path / "a", **settings), dataset=tiny_dataset).fit

    def interrupt(trainer: Trainer, record: dict[str, object]) -> None:
        if record["epoch"] == 3:  # with every=2, the last checkpoint is epoch 2's
            raise KeyboardInterrupt

    config = _config(tmp_path / "b", **settings)
    with pytest.raises(KeyboardInterrupt):
        train(config, dataset=tiny_dataset, callbacks=[interrupt])
    resumed = train(config, dataset=tiny_dataset).fit
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in straight.history]
    assert resumed.best_epoch == straight.best_epoch
    assert resumed.test == straight.test


def test_the_epoch_hook_is_called_once_before_each_epoch(
    tiny_dataset: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = _trainer(tiny_dataset, _config(tmp_path, epochs=3, batch_size=16), None)
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(
        trainer.model, "on_epoch_start", lambda epoch: calls.append((epoch, trainer.state.step))
    )
    trainer.fit()
    steps = trainer.sampler.n_batches(16, 1)
    assert calls == [(0, 0), (1, steps), (2, 2 * steps)]


class _Payload:
    """Unpickling this object would run a command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return os.system, (f"touch {self.marker}",)


def test_a_pickled_payload_in_a_checkpoint_is_refused_not_run(
    tiny_dataset: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("lmmrec.training.run.load_dataset", lambda source: tiny_dataset)
    config = _config(tmp_path, epochs=2)
    result = train(config, dataset=tiny_dataset)
    marker = tmp_path / "ran"
    for name in ("checkpoint.pt", "best.pt"):
        torch.save({"module": _Payload(marker)}, result.run_dir / name)
    with pytest.raises(TrainingError, match="pickled Python objects") as error:
        train(config, dataset=tiny_dataset)
    assert "\n" not in str(error.value) and "checkpoint.pt" in str(error.value)
    with pytest.raises(TrainingError, match=r"best\.pt holds pickled"):
        evaluate_run(result.run_dir)
    assert not marker.exists()


def test_a_truncated_best_checkpoint_is_one_clear_error(
    tiny_dataset: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = train(_config(tmp_path, epochs=2), dataset=tiny_dataset)
    best = result.run_dir / "best.pt"
    best.write_bytes(best.read_bytes()[:100])
    monkeypatch.setattr("lmmrec.training.run.load_dataset", lambda source: tiny_dataset)
    with pytest.raises(TrainingError, match="damaged or not an lmmrec checkpoint"):
        evaluate_run(result.run_dir)


def test_resume_refuses_a_different_configuration(tiny_dataset: Dataset, tmp_path: Path) -> None:
    train(_config(tmp_path, epochs=1), dataset=tiny_dataset)
    with pytest.raises(ConfigError, match="different configuration"):
        train(_config(tmp_path, epochs=2), dataset=tiny_dataset)
    assert (
        train(_config(tmp_path, epochs=2), dataset=tiny_dataset, resume=False).fit.epochs_run == 2
    )


def test_resume_compares_the_data_by_content_not_by_path(
    tiny_dataset: Dataset, tmp_path: Path
) -> None:
    """A dataset folder that moved resumes its run; data changed in place does not."""
    first = _config(tmp_path, epochs=1).model_copy(update={"dataset": "/data/shop"})
    train(first, dataset=tiny_dataset)
    moved = first.model_copy(update={"dataset": "/elsewhere/shop"})
    result = train(moved, dataset=tiny_dataset)
    assert read_json(result.run_dir / "config.json")["dataset"] == "/elsewhere/shop"
    changed = planted_dataset(seed=1)
    assert changed.content_hash() != tiny_dataset.content_hash()
    with pytest.raises(ConfigError, match="holds a run on other data"):
        train(moved, dataset=changed)


def test_resume_refuses_a_feature_set_re_extracted_in_place(
    tiny_dataset: Dataset, tmp_path: Path
) -> None:
    """Same name, same configuration, other vectors: the run is not continued on them."""
    rng = np.random.default_rng(0)
    tiny_dataset.add_feature_set(
        FeatureSet("tiny", {"v": rng.random((tiny_dataset.n_items, 8), dtype=np.float32)})
    )
    config = _config(tmp_path, epochs=1).model_copy(
        update={"model": "vbpr", "model_params": {}, "features": "tiny"}
    )
    first = train(config, dataset=tiny_dataset)
    recorded = read_json(first.run_dir / "run.json")["features_hash"]
    assert recorded == tiny_dataset.feature_set("tiny").content_hash()
    assert train(config, dataset=tiny_dataset).fit.epochs_run == 1  # unchanged: it resumes
    tiny_dataset.add_feature_set(
        FeatureSet("tiny", {"v": rng.random((tiny_dataset.n_items, 8), dtype=np.float32)})
    )
    with pytest.raises(ConfigError, match="re-extracted since it started"):
        train(config, dataset=tiny_dataset)


def test_negatives_trained_never_draws_an_item_without_training_interactions(
    tiny_dataset: Dataset, tmp_path: Path
) -> None:
    dataset = with_cold_items(tiny_dataset, [0, 5, 10])

    def negatives(**train: object) -> np.ndarray:
        trainer = _trainer(dataset, _config(tmp_path, **train), None)
        batches = trainer.sampler.epoch(64, trainer.rng)
        return np.concatenate([b.neg_items.numpy() for b in batches])

    assert np.isin(negatives(), [0, 5, 10]).any()  # MMRec's protocol: every item
    assert not np.isin(negatives(negatives="trained"), [0, 5, 10]).any()


def test_a_run_recorded_before_a_setting_existed_resumes(
    tiny_dataset: Dataset, tmp_path: Path
) -> None:
    """A setting at its neutral default is not part of a run's identity (run_identity)."""
    result = train(_config(tmp_path, epochs=1), dataset=tiny_dataset)
    stored = read_json(result.run_dir / "config.json")
    del stored["train"]["negatives"]  # as written before the setting existed
    write_json(result.run_dir / "config.json", stored)
    assert train(_config(tmp_path, epochs=1), dataset=tiny_dataset).fit.epochs_run == 1
    with pytest.raises(ConfigError, match="different configuration"):
        train(_config(tmp_path, epochs=1, negatives="trained"), dataset=tiny_dataset)


def test_nan_loss_stops_with_a_clear_error(
    tiny_dataset: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path)
    trainer = _trainer(tiny_dataset, config, None)
    monkeypatch.setattr(
        type(trainer.model),
        "loss",
        lambda self, batch, feats: self.factors.sum() * float("nan"),
    )
    with pytest.raises(TrainingError, match="learning rate"):
        trainer.fit()


def test_evaluate_run_reproduces_the_best_checkpoint(
    tiny_dataset: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = train(_config(tmp_path, epochs=5), dataset=tiny_dataset)
    monkeypatch.setattr("lmmrec.training.run.load_dataset", lambda source: tiny_dataset)
    again = evaluate_run(result.run_dir)
    assert again["test"] == pytest.approx(result.fit.test)
    assert again["valid"] == pytest.approx(result.fit.valid)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_runs_on_cuda_in_bf16(tiny_dataset: Dataset, tmp_path: Path) -> None:
    config = _config(tmp_path, epochs=3, device="cuda", precision="bf16")
    config = config.model_copy(update={"model": "lightgcn", "model_params": {}})
    trainer = _trainer(tiny_dataset, config, None)
    assert trainer.runtime.device.type == "cuda" and trainer.runtime.bf16
    result = trainer.fit()
    assert result.valid["recall@10"] > 0
