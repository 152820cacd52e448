# ruff: noqa: E402  (the test folders go on sys.path before the imports)
"""One process of a data-parallel training test (run by ``torchrun`` from test_distributed.py).

Usage: ``ddp_worker.py DATASET_FOLDER OUT_FOLDER MODE BATCH STEPS``; MODE is ``frozen`` (VBPR on
stored features) or ``end2end`` (VBPR with the tiny dual encoder, ``top:1``). With one process it
is the reference run. Each process writes its step module's parameters to ``OUT/rank<r>.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]

from tiny_towers import TINY_DUAL

from lmmrec.data.dataset import Dataset
from lmmrec.loop import save_checkpoint
from lmmrec.training import RunConfig, TrainConfig, Trainer
from lmmrec.training.run import build_step


def config(mode: str, batch: int) -> RunConfig:
    train = TrainConfig(batch_size=batch, lr=0.01, ks=[5], device="cpu", precision="fp32")
    # without the regulariser VBPR's loss is a mean over the batch's triples, so averaging the
    # gradients of two halves equals the gradient over their union (MMRec's norm penalty is not)
    common = {"model": "vbpr", "model_params": {"reg_weight": 0.0}, "train": train}
    if mode == "frozen":
        return RunConfig(features="tiny", **common)
    encoder = {"spec": TINY_DUAL, "options": {"dim": 8}, "strategy": "top:1", "lr": 0.01}
    return RunConfig(paradigm="end2end", encoder=encoder, **common)


def main() -> None:
    folder, out, mode, batch, steps = sys.argv[1:6]
    torch.set_num_threads(1)
    dataset = Dataset.load(Path(folder))
    run = config(mode, int(batch))
    trainer = Trainer(build_step(dataset, run), dataset, run.train)
    rank, world = trainer.runtime.rank, trainer.runtime.world_size
    # plain SGD over the trainer's parameter groups: Adam would turn the rounding noise of
    # gradients that are zero in exact arithmetic (VBPR's projection bias cancels in BPR
    # differences) into full-size steps, hiding what is compared: the synchronised gradients
    groups = [{"params": g["params"], "lr": g["lr"]} for g in trainer.optimizer.param_groups]
    trainer.optimizer = torch.optim.SGD(groups)
    batches = trainer.sampler.epoch(int(batch), trainer.rng, shard=(rank, world))
    for _, step_batch in zip(range(int(steps)), batches, strict=False):
        loss = trainer.module(step_batch)
        trainer.optimizer.zero_grad()
        loss.backward()
        trainer.optimizer.step()
    params = {n: p.detach() for n, p in trainer.step_module.named_parameters() if p.requires_grad}
    save_checkpoint(Path(out) / f"rank{rank}.pt", params | {"world": torch.tensor(world)})


if __name__ == "__main__":
    main()
