import pytest

from lmmrec.training.demo import DEFAULT_DEMO_LR, DEMO_EPOCHS, DEMO_PATIENCE, demo_run_config


@pytest.mark.parametrize(("model", "lr"), [("bpr", 1e-3), ("vbpr", 1e-3), ("freedom", 5e-3)])
def test_demo_runs_use_the_learning_rate_chosen_for_each_model(model: str, lr: float) -> None:
    config = demo_run_config(model, "minilm-effnet", "runs/demo")
    assert config.train.lr == lr
    assert (config.train.epochs, config.train.patience) == (DEMO_EPOCHS, DEMO_PATIENCE)
    assert (config.dataset, config.model, config.features) == ("demo", model, "minilm-effnet")


def test_demo_epochs_can_be_lowered_and_unknown_models_get_the_default_rate() -> None:
    config = demo_run_config("some-new-model", None, "out", epochs=3)
    assert config.train.epochs == 3 and config.train.lr == DEFAULT_DEMO_LR
    assert config.output_dir == "out"
