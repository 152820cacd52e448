"""Where and how training runs: device, bf16 autocast and data-parallel processes.

Built on ``accelerate.PartialState``, which reads the process layout set by ``accelerate launch``
or ``torchrun`` (rank, world size, local device) without fixing a process-wide mixed-precision
mode, so runs with different precisions can follow each other in one Python process (a grid, a
notebook, the test suite). Autocast is plain ``torch.autocast``; models that need float32 for an
operation (sparse products) cast inside.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import random
import sys
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


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
_MMAP_THRESHOLD = 1024**3  # blocks below 1 GiB come from the heap


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc on Linux (it has ``mallopt`` and ``malloc_trim``)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 (glibc has both; musl has neither)
    except (OSError, AttributeError):
        return None
    return libc


@functools.cache
def keep_freed_memory() -> bool:
    """Let glibc reuse freed memory instead of handing it back to the system (CPU runs).

    A training step allocates and frees tensors of the same sizes every time (propagated node
    embeddings, gathered feature rows, their gradients), and PyTorch's CPU allocator caches
    nothing. By default glibc maps blocks above a threshold freshly and trims the freed heap, so
    every step faults its pages in again: a tenth of a LightGCN epoch on Amazon Baby and half of
    a BM3 or FREEDOM epoch, mostly system time. Serving blocks below 1 GiB from the heap and not
    trimming it keeps those pages for reuse between steps; :func:`release_freed_memory` hands
    them back at the end of each epoch, so evaluation starts from what is live.

    Does nothing outside Linux/glibc, or when ``MALLOC_MMAP_THRESHOLD_`` or
    ``MALLOC_TRIM_THRESHOLD_`` is set (the user's own choice stands).

    Returns:
        Whether the settings were applied.
    """
    libc = _glibc()
    if libc is None or any(
        name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
    ):
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    )


def release_freed_memory() -> None:
    """Return the heap's free pages to the system (``malloc_trim``) when
    :func:`keep_freed_memory` is in effect; a no-op otherwise."""
    if keep_freed_memory.cache_info().currsize and keep_freed_memory():
        _glibc().malloc_trim(0)


@dataclass(frozen=True)
class Runtime:
    """The resolved device, precision and process layout of one training run."""

    device: torch.device
    bf16: bool
    rank: int
    world_size: int

    @classmethod
    def resolve(cls, device: DeviceChoice = "auto", precision: PrecisionChoice = "auto") -> Runtime:
        """``auto`` picks CUDA when present, and bf16 on a CUDA device that supports it.

        On the CPU it also calls :func:`keep_freed_memory` (once per process).
        """
        if device == "cuda" and not torch.cuda.is_available():
            raise ConfigError(
                "device 'cuda' was asked for but no CUDA device is available; "
                "use device=auto or device=cpu"
            )
        state = PartialState(cpu=device == "cpu")
        resolved = state.device
        on_cuda = resolved.type == "cuda"
        if resolved.type == "cpu":
            keep_freed_memory()
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
            # buffers (graph structure, stored features, the end-to-end feature bank) are the
            # same on every process by construction: no per-step broadcast
            return nn.parallel.DistributedDataParallel(
                model, device_ids=ids, forward_sync_buffers=False
            )
        return model
