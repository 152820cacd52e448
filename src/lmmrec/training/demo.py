"""Training settings of the built-in demo shop (``lmmrec demo``).

The shop is small: 18,993 training interactions make 10 batches of 2,048 per epoch, so 100 epochs
are 1,000 Adam steps. At the usual learning rate of 1e-3 some models are still improving when
the epochs run out, while others peak early and would only overfit with a larger one. So each
model trains at the learning rate from {1e-3, 5e-3} that gave the higher validation Recall@20 on
the demo shop (seed 2022, batch 2048, at most 100 epochs, patience 20; selection on the
validation split only, the same rule for every model, BPR included). The runs behind the choice
are recorded in ``benchmarks/README.md`` (the demo section). Every other setting is the model's
default.
"""

from __future__ import annotations

from lmmrec.training.config import RunConfig, TrainConfig

DEMO_EPOCHS = 100
DEMO_PATIENCE = 20
DEFAULT_DEMO_LR = 1e-3
# chosen on the demo's validation split (benchmarks/README.md); others use DEFAULT_DEMO_LR
DEMO_LEARNING_RATES: dict[str, float] = {
    "lightgcn": 5e-3,
    "lattice": 5e-3,
    "freedom": 5e-3,
    "bm3": 5e-3,
    "mmgcn": 5e-3,
}


def demo_run_config(
    model: str, features: str | None, output_dir: str, epochs: int | None = None
) -> RunConfig:
    """The run configuration of ``model`` in the demo: its demo learning rate, at most
    ``epochs`` epochs (``None``: :data:`DEMO_EPOCHS`) with early stopping on validation
    Recall@20 (patience :data:`DEMO_PATIENCE`)."""
    return RunConfig(
        dataset="demo",
        model=model,
        features=features,
        output_dir=output_dir,
        train=TrainConfig(
            epochs=epochs or DEMO_EPOCHS,
            patience=DEMO_PATIENCE,
            lr=DEMO_LEARNING_RATES.get(model, DEFAULT_DEMO_LR),
        ),
    )
