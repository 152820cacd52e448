"""Forward + backward time of the fused operations in ``lmmrec.models.ops`` against the PyTorch
composites they replace, at the shapes where the recommenders use them on Amazon Baby.

* row normalisation of MMGCN's text-branch user preferences, ``[19445, 384]``;
* in-batch InfoNCE of SLMRec's main task, ``[2048, 64]`` unit vectors, temperature 0.2.

Prints the median of ``--repeats`` timed calls (after two warm-up calls) in milliseconds. Runs
with the trainer's CPU allocator setting (``keep_freed_memory``), as training does.

Usage:
    python benchmarks/bench_ops.py [--repeats 15] [--threads 0]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torch.nn.functional as F

from lmmrec.models.ops import info_nce, normalize_rows
from lmmrec.runtime import keep_freed_memory
from timing import median_seconds


def forward_backward(fn: Callable[..., torch.Tensor], *leaves: torch.Tensor) -> Callable[[], None]:
    weight = torch.randn_like(fn(*leaves))  # a fixed upstream gradient

    def step() -> None:
        for leaf in leaves:
            leaf.grad = None
        fn(*leaves).backward(weight)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()
    torch.manual_seed(0)

    preferences = torch.randn(19445, 384).mul_(0.01).requires_grad_()
    anchors = F.normalize(torch.randn(2048, 64), dim=1).requires_grad_()
    positives = F.normalize(torch.randn(2048, 64), dim=1).requires_grad_()
    labels = torch.arange(2048)
    cases = {
        "row normalisation [19445, 384]": (
            forward_backward(lambda x: F.normalize(x, dim=1), preferences),
            forward_backward(normalize_rows, preferences),
        ),
        "in-batch InfoNCE [2048, 64]": (
            forward_backward(
                lambda a, p: F.cross_entropy((a / 0.2) @ p.T, labels), anchors, positives
            ),
            forward_backward(lambda a, p: info_nce(a, p, 0.2), anchors, positives),
        ),
    }
    print(f"{torch.get_num_threads()} torch threads")
    print("| operation | PyTorch composite ms | fused ms | ratio |")
    print("|---|---:|---:|---:|")
    for name, (composite, fused) in cases.items():
        slow, fast = (median_seconds(f, args.repeats, warmups=2) * 1e3 for f in (composite, fused))
        print(f"| {name} | {slow:.1f} | {fast:.1f} | {slow / fast:.2f}x |")


if __name__ == "__main__":
    main()
