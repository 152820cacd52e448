"""Speed and memory of registered recommenders on the real Amazon interactions (issue 3).

Per model, each in its own process: median seconds per training epoch (epochs after the first,
``Trainer.train_epoch``) and the process CPU seconds of such an epoch (with ``--threads 1``, a
measure of the work that other jobs on the machine barely disturb); median seconds of one full
evaluation of the validation split (``Trainer.evaluate("valid")``, graph propagation
included); the model's build time (item-item kNN graphs included, unless an earlier model of
the same invocation cached them); peak resident memory (``ru_maxrss``) at the end, and as it
stood after the build and after the training epochs, which tells which phase reached it.
Settings: each model's defaults, batch 2048, lr 1e-3.

Features are synthetic with MMRec's shapes: image ``[I, 4096]`` and text ``[I, 384]`` float32,
seeded standard normal. The interactions are read in place (``read_mmrec``), never copied.
MMGCN and SLMRec run with MMRec's embedding size (64; lmmrec's default is the LMM paper's 128).

``--synthetic-electronics`` replaces the data by a generated dataset of Amazon Electronics' size
(192,403 users, 63,001 items, 1,689,188 interactions, power-law item popularity, MMRec's 8:1:1
per-user split; seeded) to check that the models fit in memory and finish.

Usage:
    python benchmarks/bench_models.py [--data ../shared/data/amazon/baby] [--models vbpr,bm3]
    python benchmarks/bench_models.py --data ../shared/data/amazon/sports --epochs 3
    python benchmarks/bench_models.py --synthetic-electronics --models freedom,lattice --epochs 2
    python benchmarks/bench_models.py --models freedom --params '{"train_features": false}'
    python benchmarks/bench_models.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "amazon" / "baby"
DEFAULT_MODELS = "vbpr,bm3,freedom,lattice"
FEATURE_DIMS = {"image": 4096, "text": 384}  # MMRec's CNN image and SBERT text features
ELECTRONICS = {"n_users": 192_403, "n_items": 63_001, "n_interactions": 1_689_188}
# MMRec on this machine, Baby (../shared/reference/mmrec-timings.md): s/epoch, s/eval, peak GB
MMREC_BABY = {
    "vbpr": (6.2, 4.1, 1.03),
    "mmgcn": (121, 3.6, 2.06),
    "grcn": (73, 3.9, 2.33),
    "dualgnn": (74, 3.6, 1.40),
    "lattice": (52, 69, 3.40),
    "slmrec": (28.5, 3.9, 1.64),
    "bm3": (25, 3.7, 1.35),
    "freedom": (25, 3.7, 1.40),
}
# where lmmrec's default follows the LMM paper's configs (LMM4Rec) and MMRec's differs, the speed
# comparison runs at MMRec's setting, so both do the same work
MMREC_SETTINGS = {"mmgcn": {"embedding_size": 64}, "slmrec": {"embedding_size": 64}}


def synthetic_features(n_items: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {m: rng.standard_normal((n_items, d), dtype=np.float32) for m, d in FEATURE_DIMS.items()}


def synthetic_electronics(seed: int = 0):  # -> Dataset
    """Electronics-sized interactions: >= 5 per user, power-law item popularity, no repeats."""
    from lmmrec.data.dataset import Dataset
    from lmmrec.data.splits import random_split

    n_users, n_items, total = (ELECTRONICS[k] for k in ("n_users", "n_items", "n_interactions"))
    rng = np.random.default_rng(seed)
    extra = rng.geometric(1 / (total / n_users - 4), n_users) - 1  # mean total/n_users - 5
    counts = 5 + np.floor(extra * (total - 5 * n_users) / extra.sum()).astype(np.int64)
    counts[rng.choice(n_users, total - counts.sum(), replace=False)] += 1  # exactly `total`
    # Zipf exponent 0.55: the top 1% of items hold ~12% of interactions, as in Baby and Sports
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.55
    popularity = rng.permutation(popularity / popularity.sum())
    users = np.repeat(np.arange(n_users), counts)
    items = rng.choice(n_items, size=total, p=popularity)
    items[rng.choice(total, n_items, replace=False)] = np.arange(n_items)  # every item occurs
    while True:  # redraw repeated (user, item) pairs
        keys = users * n_items + items
        order = np.argsort(keys, kind="stable")
        repeated = order[1:][keys[order][1:] == keys[order][:-1]]
        if not len(repeated):
            break
        items[repeated] = rng.choice(n_items, size=len(repeated), p=popularity)
    labels = random_split(users, seed=seed)
    return Dataset.from_interactions(
        users, items, labels, name="synthetic-electronics", where="bench_models.py"
    )


def peak_gb() -> float:
    """The process's peak resident memory so far, in GB (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def measure(args: argparse.Namespace) -> dict[str, float | str]:
    """Runs inside a fresh process: build, train ``args.epochs`` epochs, evaluate ``args.evals``."""
    import torch

    from lmmrec.cache import DerivedCache
    from lmmrec.data.formats.mmrec import read_mmrec
    from lmmrec.models import ModelInputs, build
    from lmmrec.runtime import seed_everything
    from lmmrec.training import TrainConfig, Trainer
    from lmmrec.training.sources import StoredFeatures

    dataset = synthetic_electronics() if args.synthetic_electronics else read_mmrec(args.data)
    features = {m: torch.from_numpy(a) for m, a in synthetic_features(dataset.n_items).items()}
    if args.threads:
        torch.set_num_threads(args.threads)
    config = TrainConfig(device=args.device)
    seed_everything(config.seed)
    started = time.perf_counter()
    inputs = ModelInputs(
        n_users=dataset.n_users,
        n_items=dataset.n_items,
        train=dataset.train,
        item_feats=features,
        train_hash=dataset.content_hash(),
        cache=DerivedCache(args.cache),
    )
    params = {**MMREC_SETTINGS.get(args.model, {}), **json.loads(args.params)}
    model = build(args.model, params, inputs)
    build_seconds = time.perf_counter() - started
    peak_build_gb = peak_gb()
    trainer = Trainer(StoredFeatures(model, features), dataset, config, None)
    epochs, cpu = [], []
    for _ in range(args.epochs):
        started, started_cpu = time.perf_counter(), time.process_time()
        trainer.train_epoch()
        trainer.state.epoch += 1
        epochs.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    peak_train_gb = peak_gb()
    evals = []
    for _ in range(args.evals):
        started = time.perf_counter()
        trainer.evaluate("valid")
        evals.append(time.perf_counter() - started)
    return {
        "model": args.model,
        "dataset": dataset.name,
        "epoch_s": statistics.median(epochs[1:] or epochs),
        "epoch_cpu_s": statistics.median(cpu[1:] or cpu),
        "first_epoch_s": epochs[0],
        "eval_s": statistics.median(evals),
        "build_s": build_seconds,
        "peak_gb": peak_gb(),
        "peak_build_gb": peak_build_gb,
        "peak_train_gb": peak_train_gb,
        "device": str(trainer.runtime.device),
    }


def run_child(args: argparse.Namespace, model: str, cache: Path) -> dict:
    command = [sys.executable, __file__, "--child", "--model", model, "--cache", str(cache)]
    command += ["--data", str(args.data), "--epochs", str(args.epochs), "--evals", str(args.evals)]
    command += ["--params", args.params, "--device", args.device, "--threads", str(args.threads)]
    command += ["--synthetic-electronics"] if args.synthetic_electronics else []
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        return {"model": model, "error": result.stderr.strip().splitlines()[-1:]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def print_row(row: dict) -> None:
    if "error" in row:
        print(f"| {row['model']} | failed: {row['error']} |", flush=True)
        return
    target = MMREC_BABY.get(row["model"])
    mmrec = f"{target[0]} / {target[1]} / {target[2]}" if target else "-"
    print(
        f"| {row['model']} | {row['dataset']} | {row['epoch_s']:.2f} | {row['epoch_cpu_s']:.2f} "
        f"| {row['first_epoch_s']:.2f} | {row['eval_s']:.2f} | {row['build_s']:.1f} "
        f"| {row['peak_gb']:.2f} | {row['peak_build_gb']:.2f} | {row['peak_train_gb']:.2f} "
        f"| {mmrec} |",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="an MMRec folder")
    parser.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated model names")
    parser.add_argument("--epochs", type=int, default=4, help="training epochs per model")
    parser.add_argument("--evals", type=int, default=3, help="evaluations per model")
    parser.add_argument("--params", default="{}", help="JSON hyper-parameters for every model")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--synthetic-electronics", action="store_true")
    parser.add_argument("--cache", type=Path, help="kNN-graph cache (default: a temp folder)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args)))
        return
    if not args.synthetic_electronics and not (args.data / f"{args.data.name}.inter").is_file():
        sys.exit(f"{args.data} holds no {args.data.name}.inter; pass --data")
    print(
        "| model | dataset | s / epoch | CPU s / epoch | first epoch s | s / eval | build s "
        "| peak GB | peak after build | peak after training | MMRec Baby s/epoch / s/eval / GB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="lmmrec-bench-") as tmp:
        cache = args.cache or Path(tmp)
        for model in args.models.split(","):
            print_row(run_child(args, model, cache))


if __name__ == "__main__":
    main()
