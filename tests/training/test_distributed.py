"""Data parallelism: two CPU processes (gloo) under torchrun train as one on their union."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_towers import TINY_DUAL, content_dataset

from lmmrec.encoders import build, extract_features
from lmmrec.loop import load_checkpoint

WORKER = Path(__file__).with_name("ddp_worker.py")


def _run(args: list[str], processes: int) -> None:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command = [*launcher, f"--nproc_per_node={processes}", str(WORKER), *args]
    env = os.environ | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("mode", ["frozen", "end2end"])
def test_two_processes_stay_identical_and_match_one_process_on_their_union(
    tmp_path: Path, mode: str
) -> None:
    folder = tmp_path / "data"
    dataset = content_dataset(folder)
    if mode == "frozen":
        torch.manual_seed(0)
        extract_features(dataset, build(TINY_DUAL, dim=8), name="tiny", num_workers=0)
    batch, steps = 50, 3  # 600 training triples: the union of a step's batches is rows of 100
    _run([str(folder), str(tmp_path / "ddp"), mode, str(batch), str(steps)], processes=2)
    _run([str(folder), str(tmp_path / "one"), mode, str(2 * batch), str(steps)], processes=1)
    rank0, rank1 = (load_checkpoint(tmp_path / "ddp" / f"rank{r}.pt") for r in (0, 1))
    single = load_checkpoint(tmp_path / "one" / "rank0.pt")
    assert int(rank0.pop("world")) == 2 and int(single.pop("world")) == 1
    rank1.pop("world")
    encoder = [n for n in single if n.startswith("encoding.")]
    assert bool(encoder) == (mode == "end2end")
    for name, value in single.items():
        assert torch.equal(rank0[name], rank1[name]), name  # synchronised gradients
        torch.testing.assert_close(rank0[name], value, rtol=1e-4, atol=1e-5, msg=name)
