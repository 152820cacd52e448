"""Fine-tuning cost and effect per strategy: seconds per epoch, pairs per second, peak memory,
and held-out image<->text retrieval before and after.

Runs :func:`lmmrec.encoders.finetune` once per strategy on the same dataset and encoder spec
(each run from a fresh build, output folders under a temporary directory) and prints one row per
strategy. Peak memory is ``torch.cuda.max_memory_allocated`` on CUDA, else the process's peak RSS
(which only grows, so on CPU read the rows in order).

Usage:
    python benchmarks/bench_finetune.py [--dataset demo] [--encoder dual:default] \\
        [--strategies projection,top:1,lora:8] [--epochs 1] [--batch-size 64] [--device auto] \\
        [--workers 1] [--option dim=256]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
from pathlib import Path

import torch

from lmmrec.data import load_dataset
from lmmrec.encoders import FinetuneConfig, finetune, load_encoder


def _peak_mib(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="demo")
    parser.add_argument("--encoder", default="dual:default")
    parser.add_argument("--strategies", default="projection,top:1,lora:8")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--option", action="append", default=[], help="encoder KEY=VALUE")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    options = {k: _value(v) for k, _, v in (o.partition("=") for o in args.option)}
    dataset = load_dataset(args.dataset)
    print(f"{args.encoder} on {dataset.name}, batch {args.batch_size}, {args.epochs} epoch(s)")
    header = f"{'strategy':<12}{'s/epoch':>9}{'pairs/s':>9}{'peak MiB':>10}"
    print(header + f"{'R before':>10}{'R after':>9}{'trainable':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in args.strategies.split(","):
            encoder = load_encoder(args.encoder, **options)
            config = FinetuneConfig(
                strategy=strategy,
                lr=args.lr,
                epochs=args.epochs,
                batch_size=args.batch_size,
                num_workers=args.workers,
                device=args.device,
                patience=args.epochs,
            )
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            out = Path(tmp) / strategy.replace(":", "-")
            result = finetune(encoder, dataset, config, out=out, progress=False)
            trainable = sum(p.numel() for p in encoder.parameters() if p.requires_grad)
            epoch_seconds = result.seconds / result.epochs_run
            device = next(encoder.parameters()).device.type
            print(
                f"{strategy:<12}{epoch_seconds:>9.1f}"
                f"{result.pairs['train'] / epoch_seconds:>9.1f}{_peak_mib(device):>10.0f}"
                f"{result.before['mean_recall']:>10.4f}{result.after['mean_recall']:>9.4f}"
                f"{trainable:>11,}"
            )
    print("R: mean of held-out i2t/t2i Recall@1/5/10; s/epoch includes the held-out evaluation")


def _value(text: str) -> object:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


if __name__ == "__main__":
    main()
