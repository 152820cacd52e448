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

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lmmrec.data.dataset import Dataset
from lmmrec.training.config import RunConfig, TrainConfig
from lmmrec.training.run import train

DEMO_EPOCHS = 100
DEMO_MAX_EPOCHS = 1000  # the paradigms demo: early stopping ends every run, not a cap
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


# -- the paradigms demo (`lmmrec demo`) ------------------------------------------------------

PARADIGM_MODELS = ("vbpr", "freedom")  # the paper's first model and a graph model
DEMO_ENCODER = "dual:default"  # EfficientNet-Lite0 + MiniLM towers, 256-d heads, offline
FROZEN_FEATURES = "minilm-effnet"
FINETUNED_FEATURES = "dual-finetuned"
# the demo's fine-tuning and end-to-end encoder settings: the heads train (strategy projection)
DEMO_FINETUNE = {"strategy": "projection", "lr": 1e-3, "epochs": 30, "batch_size": 256}
DEMO_END2END = {"spec": DEMO_ENCODER, "strategy": "projection", "lr": 1e-3}


@dataclass
class DemoRow:
    """One row of the paradigms table: a model in a paradigm, test metrics at its best epoch."""

    model: str
    paradigm: str
    test: dict[str, float]
    epochs: int
    best_epoch: int
    seconds: float


def paradigm_configs(
    output_dir: str, models: tuple[str, ...] = PARADIGM_MODELS, epochs: int | None = None
) -> list[tuple[str, RunConfig]]:
    """``(paradigm, config)`` of every demo row: BPR, then each model frozen (MiniLM +
    EfficientNet features), fine-tuned (the ``dual`` encoder's features after fine-tuning on
    the items) and end-to-end (the ``dual`` encoder's heads trained by the recommendation loss).
    Runs stop early on validation; ``epochs`` caps them (``None``: :data:`DEMO_MAX_EPOCHS`)."""
    cap = epochs or DEMO_MAX_EPOCHS
    rows = [("-", _named(demo_run_config("bpr", None, output_dir, cap), "bpr"))]
    sources = {
        "frozen": {"features": FROZEN_FEATURES},
        "finetuned": {"features": FINETUNED_FEATURES},
        "end2end": {"encoder": DEMO_END2END},
    }
    for model in models:
        base = demo_run_config(model, None, output_dir, cap).model_dump()
        for paradigm, source in sources.items():
            config = RunConfig.model_validate(base | source | {"paradigm": paradigm})
            rows.append((paradigm, _named(config, f"{model}-{paradigm}")))
    return rows


def _named(config: RunConfig, name: str) -> RunConfig:
    return config.model_copy(update={"name": f"demo-{name}"})


def run_paradigm_demo(
    output_dir: str,
    models: tuple[str, ...] = PARADIGM_MODELS,
    epochs: int | None = None,
    say: Callable[[str], None] = print,
) -> list[DemoRow]:
    """Prepare the demo shop's features (frozen extraction, fine-tuning, fine-tuned extraction;
    each once, then cached in the demo folder) and train every row of :func:`paradigm_configs`."""
    from lmmrec.data.demo import load_demo

    dataset = load_demo()
    prepare_demo_features(dataset, say)
    rows = []
    for paradigm, config in paradigm_configs(output_dir, models, epochs):
        say(f"training {config.model} ({paradigm}, lr {config.train.lr:g}, early stopping)")
        fit = train(config, dataset=dataset, resume=False).fit
        rows.append(
            DemoRow(config.model, paradigm, fit.test, fit.epochs_run, fit.best_epoch, fit.seconds)
        )
    return rows


def prepare_demo_features(
    dataset: Dataset, say: Callable[[str], None] = print, finetuned: bool = True
) -> None:
    """The frozen (and ``finetuned``) feature sets of the demo, made once, kept in its folder."""
    from lmmrec.encoders import build, extract_features
    from lmmrec.encoders.finetune import FinetuneConfig, finetune

    if FROZEN_FEATURES not in dataset.features:
        say(f"extracting {FROZEN_FEATURES}: MiniLM texts (384-d) + EfficientNet images (1280-d)")
        dataset.add_feature_set(
            extract_features(dataset, build("pair:default"), name=FROZEN_FEATURES)
        )
    if finetuned and FINETUNED_FEATURES not in dataset.features:
        say(f"fine-tuning {DEMO_ENCODER} on the shop's items (image-text contrastive)")
        folder = Path(dataset.root) / "encoders" / FINETUNED_FEATURES
        result = finetune(build(DEMO_ENCODER), dataset, FinetuneConfig(**DEMO_FINETUNE), out=folder)
        say(
            f"held-out image->text R@10 {result.before['i2t@10']:.3f} -> "
            f"{result.after['i2t@10']:.3f}, text->image R@10 {result.before['t2i@10']:.3f} -> "
            f"{result.after['t2i@10']:.3f}"
        )
        dataset.add_feature_set(
            extract_features(
                dataset, result.encoder(), name=FINETUNED_FEATURES, modalities=["image", "text"]
            )
        )


def run_zoo_demo(
    output_dir: str,
    models: set[str] | None = None,
    epochs: int | None = None,
    say: Callable[[str], None] = print,
) -> list[DemoRow]:
    """BPR, LightGCN and every content model on the frozen features (``lmmrec demo --zoo``),
    each at its demo learning rate, at most ``epochs`` (default :data:`DEMO_EPOCHS`)."""
    from lmmrec.data.demo import load_demo
    from lmmrec.models import get, names

    dataset = load_demo()
    chosen = [m for m in names() if models is None or m in models]
    if any(get(m).needs_features for m in chosen):
        prepare_demo_features(dataset, say, finetuned=False)
    rows = []
    for model in chosen:
        features = FROZEN_FEATURES if get(model).needs_features else None
        config = demo_run_config(model, features, output_dir, epochs)
        say(f"training {model} (lr {config.train.lr:g}, at most {config.train.epochs} epochs)")
        fit = train(config, dataset=dataset, resume=False).fit
        rows.append(DemoRow(model, "-", fit.test, fit.epochs_run, fit.best_epoch, fit.seconds))
    return rows
