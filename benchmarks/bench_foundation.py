"""Foundation benchmarks on the real Amazon Baby interactions (issue: foundation).

Measures, per model (BPR, LightGCN with 3 layers; embedding 64, batch 2048, lr 1e-3):
  * median seconds per training epoch (epochs after the first),
  * median seconds of one full-ranking evaluation of one split (all validation users),
  * peak resident memory of the process (each model runs in its own process).
With ``--accuracy`` it trains each model to early stopping (MMRec protocol: patience 20 on
validation Recall@20, test read at the best validation epoch) and prints test Recall/NDCG@20.

Usage:
    python benchmarks/bench_foundation.py [--data ../shared/data/amazon/baby] [--epochs 6]
    python benchmarks/bench_foundation.py --accuracy
The data is read in place and never copied into the repository.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "amazon" / "baby"
MODELS = {"bpr": {"embedding_size": 64}, "lightgcn": {"embedding_size": 64, "n_layers": 3}}


def measure_speed(data: Path, model: str, epochs: int, evals: int) -> dict[str, float]:
    """Run inside a fresh process: epoch and evaluation timings plus peak RSS."""
    from lmmrec.data.formats.mmrec import read_mmrec
    from lmmrec.training import RunConfig, TrainConfig, Trainer
    from lmmrec.training.run import build_model

    started = time.perf_counter()
    dataset = read_mmrec(data)
    load_seconds = time.perf_counter() - started
    config = RunConfig(model=model, model_params=MODELS[model], train=TrainConfig(device="auto"))
    trainer = Trainer(build_model(dataset, config, {}), dataset, config.train, None)
    epoch_times = []
    for _ in range(epochs):
        started = time.perf_counter()
        trainer.train_epoch()
        trainer.state.epoch += 1
        epoch_times.append(time.perf_counter() - started)
    eval_times = []
    for _ in range(evals):
        started = time.perf_counter()
        trainer.evaluate("valid")
        eval_times.append(time.perf_counter() - started)
    return {
        "load_s": load_seconds,
        "epoch_s": statistics.median(epoch_times[1:]),
        "first_epoch_s": epoch_times[0],
        "eval_s": statistics.median(eval_times),
        "eval_users": trainer.valid_evaluator.n_users,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
        "device": str(trainer.runtime.device),
    }


def measure_accuracy(data: Path, model: str, params: dict[str, float]) -> dict[str, float]:
    from lmmrec.data.formats.mmrec import read_mmrec
    from lmmrec.training import RunConfig, TrainConfig, Trainer
    from lmmrec.training.run import build_model

    dataset = read_mmrec(data)
    config = RunConfig(
        model=model, model_params={**MODELS[model], **params}, train=TrainConfig(patience=20)
    )
    started = time.perf_counter()
    fit = Trainer(build_model(dataset, config, {}), dataset, config.train, None).fit()
    return {
        "valid_recall@20": fit.valid["recall@20"],
        "test_recall@10": fit.test["recall@10"],
        "test_recall@20": fit.test["recall@20"],
        "test_ndcg@10": fit.test["ndcg@10"],
        "test_ndcg@20": fit.test["ndcg@20"],
        "best_epoch": fit.best_epoch,
        "epochs": fit.epochs_run,
        "seconds": time.perf_counter() - started,
    }


def _child(args: argparse.Namespace) -> None:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.accuracy:
        result = measure_accuracy(args.data, args.model, json.loads(args.params))
    else:
        result = measure_speed(args.data, args.model, args.epochs, args.evals)
    print(json.dumps(result))


def _in_process(args: argparse.Namespace, model: str, params: dict[str, float]) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        "--model",
        model,
        "--data",
        str(args.data),
        "--epochs",
        str(args.epochs),
        "--evals",
        str(args.evals),
        "--params",
        json.dumps(params),
        "--threads",
        str(args.threads),
    ] + (["--accuracy"] if args.accuracy else [])
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--evals", type=int, default=5)
    parser.add_argument("--accuracy", action="store_true")
    parser.add_argument("--models", default="bpr,lightgcn")
    parser.add_argument("--params", default="{}", help="JSON hyper-parameters (accuracy runs)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    if not (args.data / f"{args.data.name}.inter").is_file():
        sys.exit(f"{args.data} holds no {args.data.name}.inter; pass --data")
    for model in args.models.split(","):
        result = _in_process(args, model, json.loads(args.params))
        print(
            f"{model:9s} "
            + "  ".join(
                f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
