"""Where a whole training run's time goes: training vs validation vs test vs checkpoints.

Runs ``lmmrec.training.train`` to early stopping (the trainer's defaults: patience 20, Recall@20)
on a real MMRec folder and prints the run's time split (``FitResult.time``): the epochs'
training, the validation rankings, the one test ranking at the selected epoch, and writing
``checkpoint.pt`` / ``best.pt``. The overhead is everything but training, as a share of training.

Content models get synthetic features of MMRec's shapes (``bench_models.synthetic_features``):
right for time, not for accuracy.

Usage::

    python benchmarks/bench_run_overhead.py ../shared/data/amazon/baby --models bpr,vbpr
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from bench_models import synthetic_features
from lmmrec.data.features import FeatureSet
from lmmrec.data.formats.mmrec import read_mmrec
from lmmrec.models import registry
from lmmrec.training import RunConfig, TrainConfig, train

FEATURES = "synthetic"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="an MMRec folder (<name>.inter)")
    parser.add_argument("--models", default="bpr,vbpr")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1000, help="cap (early stopping decides)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = read_mmrec(args.data)
    dataset.features[FEATURES] = FeatureSet(FEATURES, synthetic_features(dataset.n_items))
    print(f"{dataset.name}: {dataset.n_users} users, {dataset.n_items} items, {args.threads} thr")
    print("| model | epochs | best | train s | valid s | test s | checkpoint s | overhead/train |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for model in args.models.split(","):
        needs = registry.get(model).needs_features
        with tempfile.TemporaryDirectory() as folder:
            config = RunConfig(
                dataset=str(args.data),
                model=model,
                features=FEATURES if needs else None,
                output_dir=folder,
                train=TrainConfig(epochs=args.epochs),
            )
            fit = train(config, dataset=dataset).fit
        split = fit.time
        overhead = split["valid"] + split["test"] + split["checkpoint"]
        print(
            f"| {model} | {fit.epochs_run} | {fit.best_epoch} | {split['train']:.1f} | "
            f"{split['valid']:.1f} | {split['test']:.1f} | {split['checkpoint']:.2f} | "
            f"{overhead / split['train']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
