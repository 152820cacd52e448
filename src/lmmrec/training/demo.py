"""The built-in demo (``lmmrec demo``): packaged experiment files run by the experiment runner.

``lmmrec demo`` prepares what the runner cannot make itself (the demo shop's frozen features and
the ``dual`` encoder fine-tuned on its items, each made once and cached in the shop's folder),
then runs the built-in experiment ``demo`` (``lmmrec/experiments/builtin/demo.yaml``: BPR, and
VBPR and FREEDOM x frozen / fine-tuned / end-to-end, learning rates chosen on validation) through
:func:`lmmrec.experiments.run_experiment`, so finished runs are skipped and interrupted ones
resume. ``--zoo`` runs ``defaults-demo`` instead: every registered model with its defaults.
The rows come from the runner's results at the grid point selected on validation.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmmrec.data.dataset import Dataset
from lmmrec.experiments.spec import Experiment, builtin_path, load_experiment
from lmmrec.io import read_yaml

PARADIGMS_EXPERIMENT = "demo"  # lmmrec/experiments/builtin/demo.yaml
ZOO_EXPERIMENT = "defaults-demo"  # every model with its defaults (lmmrec demo --zoo)
PARADIGM_MODELS = ("vbpr", "freedom")  # the paper's first model and a graph model
BASELINE = "bpr"
DEMO_ENCODER = "dual:default"  # EfficientNet-Lite0 + MiniLM towers, 256-d heads, offline
FROZEN_FEATURES = "minilm-effnet"
FINETUNED_FEATURES = "dual-finetuned"
# the demo's fine-tuning of the dual encoder (its heads; the towers stay frozen on a CPU)
DEMO_FINETUNE = {"strategy": "projection", "lr": 1e-3, "epochs": 30, "batch_size": 256}


@dataclass
class DemoRow:
    """One row of a demo table: a model (in a paradigm) at the grid point chosen on validation,
    with its test metrics at the best validation epoch."""

    model: str
    paradigm: str
    test: dict[str, float]
    epochs: int
    best_epoch: int
    seconds: float
    point: dict[str, Any] = field(default_factory=dict)
    run_dir: str = ""
    new_items: dict[str, float] | None = None  # test metrics in the pool of the new items


def demo_experiment(
    output_dir: str | Path | None = None,
    models: tuple[str, ...] | None = None,
    epochs: int | None = None,
    zoo: bool = False,
) -> Experiment:
    """The built-in demo experiment, its runs under ``output_dir`` (``<output_dir>/runs``).

    Args:
        output_dir: the experiment's output folder (``None``: the file's; ``runs/demo`` and
            ``runs/experiments/defaults-demo``).
        models: keep only these models (BPR, the baseline, always stays); ``None``: all.
        epochs: cap on epochs per run (``None``: the file's; early stopping decides).
        zoo: ``defaults-demo`` (every model with its defaults) instead of ``demo``.
    """
    data = read_yaml(builtin_path(ZOO_EXPERIMENT if zoo else PARADIGMS_EXPERIMENT))
    if output_dir is not None:
        data["output_dir"] = str(output_dir)
    if models is not None:
        listed = data["models"]
        keep = {BASELINE, *models}
        if isinstance(listed, list):
            data["models"] = [m for m in listed if m in keep]
        else:
            data["models"] = {m: entry for m, entry in listed.items() if m in keep}
    if epochs is not None:
        data["train"] = {**(data.get("train") or {}), "epochs": epochs}
    return load_experiment(data)


def run_demo(experiment: Experiment, console: Any = None) -> list[DemoRow]:
    """Prepare the demo's features, run ``experiment`` (:func:`demo_experiment`; resumable), and
    return one row per model and paradigm at its validation-selected grid point (file order)."""
    from lmmrec.data.demo import load_demo
    from lmmrec.experiments import run_experiment
    from lmmrec.models import get

    say = console.print if console is not None else print
    models = {cell.model for cell in experiment.cells}
    paradigms = {cell.paradigm for cell in experiment.cells}
    if any(get(m).needs_features for m in models):
        prepare_demo_features(load_demo(), say, finetuned="finetuned" in paradigms)
    result = run_experiment(experiment, console=console)
    return demo_rows(experiment, result.results)


def rank_new_items(rows: list[DemoRow]) -> None:
    """Fill each row's ``new_items``: its test metrics in the pool of the shop's new items
    (those without training interactions), placed from their content where the model can
    (:mod:`lmmrec.evaluation.pools`); each run evaluated once, then read from its
    ``pools.json``."""
    from tqdm.auto import tqdm

    from lmmrec.training.run import evaluate_run_pools

    for row in tqdm(rows, desc="ranking the new items", unit="run", leave=False, disable=None):
        results = evaluate_run_pools(Path(row.run_dir), ("test",), cached=True)["test"]
        cold = {r.scored_by: r for r in results if r.pool == "cold"}
        if cold:  # the model's content placement when it has one, else the learned vectors
            row.new_items = cold.get("content", cold["learned"]).metrics


def demo_rows(experiment: Experiment, results: Any) -> list[DemoRow]:
    """The table's rows from the runner's results: per (model, paradigm), the grid point with
    the best validation metric (:func:`lmmrec.experiments.report.select_points`)."""
    from lmmrec.experiments.report import NONE, select_points

    metrics = sorted({c for c in results.columns if c.startswith("test.")})
    selected = select_points(results, experiment.spec.select, [m[5:] for m in metrics])
    by_dir = results.set_index("run_dir")
    rows = []
    for row in selected.itertuples():
        run = by_dir.loc[row.run_dirs[0]]  # one seed in the demo
        test = {m[5:]: float(run[m]) for m in metrics if not _missing(run[m])}
        rows.append(
            DemoRow(
                model=row.model,
                paradigm="-" if row.paradigm == NONE else str(row.paradigm),
                test=test,
                epochs=int(run["epochs_run"]),
                best_epoch=int(run["best_epoch"]),
                seconds=float(run["seconds"]),
                point=json.loads(row.point),
                run_dir=str(row.run_dirs[0]),
            )
        )
    return rows


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


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
