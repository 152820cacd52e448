"""Where and how training runs: device, bf16 autocast and data-parallel processes.

Built on ``accelerate.PartialState``, which reads the process layout set by ``accelerate launch``
or ``torchrun`` (rank, world size, local device) without fixing a process-wide mixed-precision
mode, so runs with different precisions can follow each other in one Python process (a grid, a
notebook, the test suite). Autocast is plain ``torch.autocast``; models that need float32 for an
operation (sparse products) cast inside.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from accelerate import PartialState
from torch import nn

from lmmrec.errors import ConfigError

DeviceChoice = Literal["auto", "cpu", "cuda"]
PrecisionChoice = Literal["auto", "fp32", "bf16"]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (every device) so a run is reproducible."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class Runtime:
    """The resolved device, precision and process layout of one training run."""

    device: torch.device
    bf16: bool
    rank: int
    world_size: int

    @classmethod
    def resolve(cls, device: DeviceChoice = "auto", precision: PrecisionChoice = "auto") -> Runtime:
        """``auto`` picks CUDA when present, and bf16 on a CUDA device that supports it."""
        if device == "cuda" and not torch.cuda.is_available():
            raise ConfigError(
                "device 'cuda' was asked for but no CUDA device is available; "
                "use device=auto or device=cpu"
            )
        state = PartialState(cpu=device == "cpu")
        resolved = state.device
        on_cuda = resolved.type == "cuda"
        if precision == "bf16" and not (on_cuda and torch.cuda.is_bf16_supported()):
            raise ConfigError(
                "precision 'bf16' needs a CUDA device with bf16 support; "
                "use precision=auto or precision=fp32"
            )
        bf16 = precision == "bf16" or (
            precision == "auto" and on_cuda and torch.cuda.is_bf16_supported()
        )
        return cls(
            device=resolved, bf16=bf16, rank=state.process_index, world_size=state.num_processes
        )

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def precision(self) -> str:
        return "bf16" if self.bf16 else "fp32"

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        """bf16 autocast on the run's device when enabled, a no-op otherwise."""
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def wrap(self, model: nn.Module) -> nn.Module:
        """Move ``model`` to the device; wrap it in DDP when several processes train together."""
        model = model.to(self.device)
        if self.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            return nn.parallel.DistributedDataParallel(model, device_ids=ids)
        return model
