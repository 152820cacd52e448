import pytest

from lmmrec.training.demo import (
    DEFAULT_DEMO_LR,
    DEMO_ENCODER,
    DEMO_EPOCHS,
    DEMO_LEARNING_RATES,
    DEMO_MAX_EPOCHS,
    DEMO_PATIENCE,
    FINETUNED_FEATURES,
    FROZEN_FEATURES,
    demo_run_config,
    paradigm_configs,
)


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


def test_the_paradigms_demo_trains_each_model_in_the_three_paradigms_beside_bpr() -> None:
    rows = paradigm_configs("runs", ("vbpr", "freedom"))
    assert [(p, c.model) for p, c in rows] == [
        ("-", "bpr"),
        *((p, m) for m in ("vbpr", "freedom") for p in ("frozen", "finetuned", "end2end")),
    ]
    by_key = {(c.model, p): c for p, c in rows}
    assert by_key[("vbpr", "frozen")].features == FROZEN_FEATURES
    assert by_key[("vbpr", "finetuned")].features == FINETUNED_FEATURES
    end2end = by_key[("freedom", "end2end")]
    assert end2end.encoder is not None and end2end.encoder.spec == DEMO_ENCODER
    assert end2end.train.lr == DEMO_LEARNING_RATES["freedom"]  # the recommender's demo lr
    assert len({c.name for _, c in rows}) == len(rows)  # every row has its own run directory
    assert all(c.train.epochs == DEMO_MAX_EPOCHS for _, c in rows)  # early stopping decides
