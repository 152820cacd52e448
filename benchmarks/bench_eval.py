"""Where full-ranking evaluation time goes, on the real Amazon interactions.

Builds the validation :class:`~lmmrec.evaluation.Evaluator` of an MMRec folder and times, on seeded
random vectors (``D`` wide), the whole ``Evaluator.evaluate`` and its two main parts alone: the
score products ``user_vecs[block] @ item_vecs.T`` (written into one reused block buffer) and
``torch.topk`` over that buffer. Prints the median of ``--repeats`` timed calls (after one
warm-up call) in seconds. Runs with the trainer's CPU allocator setting (``keep_freed_memory``).

Usage:
    python benchmarks/bench_eval.py [--data ../shared/data/amazon/sports] [--dim 64]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lmmrec.data.formats.mmrec import read_mmrec
from lmmrec.evaluation import Evaluator
from lmmrec.runtime import keep_freed_memory
from timing import median_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/amazon/sports"))
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--block", type=int, default=2048, help="users per scoring block")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()
    dataset = read_mmrec(args.data)
    evaluator = Evaluator(dataset, "valid", batch_size=args.block)
    k_max = evaluator.ks[-1]
    gen = torch.Generator().manual_seed(0)
    user_vecs = torch.randn(dataset.n_users, args.dim, generator=gen)
    item_vecs = torch.randn(dataset.n_items, args.dim, generator=gen)
    item_vecs_t = item_vecs.T.contiguous()
    blocks = torch.arange(evaluator.n_users).split(args.block)  # as many users as evaluate's
    scores = torch.empty(args.block, dataset.n_items)

    def products() -> None:
        for users in blocks:
            torch.mm(user_vecs[users], item_vecs_t, out=scores[: len(users)])

    def top_k() -> None:
        for users in blocks:
            scores[: len(users)].topk(k_max, dim=1, sorted=True)

    products()
    with torch.inference_mode():
        timings = {
            "evaluate (all of it)": median_seconds(
                lambda: evaluator.evaluate(user_vecs, item_vecs), args.repeats
            ),
            "score products": median_seconds(products, args.repeats),
            f"topk (K = {k_max})": median_seconds(top_k, args.repeats),
        }
    print(
        f"{dataset.name}: {evaluator.n_users} users x {dataset.n_items} items, D = {args.dim}, "
        f"{len(blocks)} blocks, {torch.get_num_threads()} torch threads"
    )
    print("| part | s |")
    print("|---|---:|")
    for name, seconds in timings.items():
        print(f"| {name} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
