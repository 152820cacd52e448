"""How often items without training interactions (new items) reach the runs' top-K lists.

For each run directory: its best checkpoint's final vectors, every test user's top-K under the
evaluation protocol (training items masked, the one ranker), then the share of the K slots that
hold a cold item (:meth:`lmmrec.data.dataset.Dataset.cold_items`) and the share of users with at
least one. Prints one line per run (benchmarks/README.md, "The new items of the demo shop").

Usage:
    python benchmarks/new_items_in_lists.py RUN_DIR [RUN_DIR ...] [--k 20]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lmmrec.evaluation.ranking import Ranker
from lmmrec.training.run import load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories")
    parser.add_argument("--k", type=int, default=20, help="list length K")
    args = parser.parse_args()
    print("run                        model     seed  cold slots  users with one")
    for run_dir in args.runs:
        config, dataset, trainer = load_run(run_dir)
        users, items = trainer.embed()
        test_users = torch.from_numpy((dataset.test.getnnz(axis=1) > 0).nonzero()[0])
        top = Ranker(items).top_k(users[test_users], args.k, seen=dataset.train[test_users.numpy()])
        in_list = torch.from_numpy(dataset.cold_items())[top.items]  # [R, K]
        print(
            f"{run_dir.name:26s} {config.model:9s} {config.train.seed:4d}  "
            f"{in_list.float().mean():10.4f}  {in_list.any(dim=1).float().mean():14.3f}"
        )


if __name__ == "__main__":
    main()
