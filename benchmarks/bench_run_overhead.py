"""Where a whole training run's time goes: training vs validation vs test vs checkpoints.

Runs ``lmmrec.training.train`` to early stopping (the trainer's defaults: patience 20, Recall@20)
on a real MMRec folder and prints the run's time split (``FitResult.time``): the epochs'
training, the validation rankings, the one test ranking at the selected epoch, and writing
``checkpoint.pt`` / ``best.pt``. The overhead is everything but training, as a share of training.

Content models get synthetic features of MMRec's shapes (``bench_models.synthetic_features``):
right for time, not for accuracy.

No Clothing interactions exist offline: ``clothing-shaped`` draws interactions of its size
(39,387 users, 23,033 items, ~279k interactions) with Amazon-like popularity
(``catalogs.interactions_dataset``): right for time, not for accuracy.

Usage::

    python benchmarks/bench_run_overhead.py ../shared/data/amazon/baby --models bpr,vbpr
    python benchmarks/bench_run_overhead.py clothing-shaped --models bpr --eval-every 1,5
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from bench_models import synthetic_features
from catalogs import AMAZON_SHAPES, interactions_dataset
from lmmrec.data.features import FeatureSet
from lmmrec.data.formats.mmrec import read_mmrec
from lmmrec.models import registry
from lmmrec.training import RunConfig, TrainConfig, train

FEATURES = "synthetic"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "data", help="an MMRec folder (<name>.inter), or NAME-shaped (catalogs.AMAZON_SHAPES)"
    )
    parser.add_argument("--models", default="bpr,vbpr")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1000, help="cap (early stopping decides)")
    parser.add_argument(
        "--eval-every", default="1", help="validate every N epochs; a list (1,3) runs each"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shape = args.data.removesuffix("-shaped")
    if shape in AMAZON_SHAPES:
        dataset = interactions_dataset(args.data, *AMAZON_SHAPES[shape])
    else:
        dataset = read_mmrec(Path(args.data))
    dataset.features[FEATURES] = FeatureSet(FEATURES, synthetic_features(dataset.n_items))
    print(
        f"{dataset.name}: {dataset.n_users} users, {dataset.n_items} items, "
        f"{dataset.train.nnz} training interactions, {args.threads} threads"
    )
    print(
        "| model | validated every | epochs | best | train s | valid s | test s | checkpoint s "
        "| overhead/train | test recall@20 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for model in args.models.split(","):
        needs = registry.get(model).needs_features
        for every in map(int, args.eval_every.split(",")):
            with tempfile.TemporaryDirectory() as folder:
                config = RunConfig(
                    dataset=str(args.data),
                    model=model,
                    features=FEATURES if needs else None,
                    output_dir=folder,
                    train=TrainConfig(epochs=args.epochs, eval_every=every),
                )
                fit = train(config, dataset=dataset).fit
            split = fit.time
            overhead = split["valid"] + split["test"] + split["checkpoint"]
            print(
                f"| {model} | {every} | {fit.epochs_run} | {fit.best_epoch} | "
                f"{split['train']:.1f} | {split['valid']:.1f} | {split['test']:.1f} | "
                f"{split['checkpoint']:.2f} | {overhead / split['train']:.2f} | "
                f"{fit.test['recall@20']:.4f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
