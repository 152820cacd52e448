"""The durable parts of a training loop, shared by recommendation training and encoder fine-tuning.

Both loops (:class:`lmmrec.training.trainer.Trainer` and :mod:`lmmrec.encoders.finetune`) keep
the same small pieces, the way Lightning's ``ModelCheckpoint`` and ``EarlyStopping`` callbacks
serve any module:

* :class:`LoopState`: epoch and step counters, the best validation value and where it was, the
  per-epoch history; saved in every checkpoint as plain values.
* :class:`EarlyStopping`: "did this evaluation improve, and is it time to stop" on one metric.
* :func:`save_checkpoint` / :func:`load_checkpoint`: a dict of tensors and plain Python values,
  written atomically and read back **without unpickling anything** (``weights_only=True``): a
  tampered checkpoint is refused with one line, never executed.
* :class:`CheckpointSchedule`: when the full state is worth writing (every N epochs and/or every
  T seconds, and always at the end), so a run does not wait for its bookkeeping every epoch.
* :func:`rng_states` / :func:`restore_rng_states`: the NumPy, torch CPU and CUDA generators, for
  an exact resume.
* :func:`file_log`: a context manager that mirrors a logger into ``log.txt``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import pickle
import time
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmmrec.errors import TrainingError
from lmmrec.io import atomic_path


@dataclass
class LoopState:
    """Where a loop stands; every field is a plain value, so it checkpoints without pickles.

    Attributes:
        epoch: epochs finished.
        step: optimiser steps taken.
        best_epoch: the epoch of the best validation value (0: none yet).
        best_value: that value (``-inf`` before the first evaluation).
        stale_epochs: epochs from ``best_epoch`` to the last evaluation.
        best_metrics: every validation metric at ``best_epoch``.
        history: one record per epoch (loss, seconds, validation metrics when evaluated).
        seconds: wall time spent in epochs so far (training and validation).
    """

    epoch: int = 0
    step: int = 0
    best_epoch: int = 0
    best_value: float = -math.inf
    stale_epochs: int = 0
    best_metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoopState:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass(frozen=True)
class EarlyStopping:
    """Stop at the first evaluation ``patience`` or more epochs after the best one (a higher
    ``metric``, validation only).

    Patience counts epochs, not evaluations, so that validating every few epochs
    (``TrainConfig.eval_every``) saves validation time without training longer: evaluated every
    epoch, as by default, the two are the same (MMRec's ``stopping_step`` with ``eval_step: 1``).

    Args:
        metric: the key of the validation metrics dict that selects (``"recall@20"``).
        patience: epochs without improvement before stopping.
    """

    metric: str
    patience: int

    def update(self, state: LoopState, metrics: dict[str, float]) -> bool:
        """Record one evaluation at ``state.epoch``; returns whether it is the new best."""
        value = metrics[self.metric]
        if value > state.best_value:
            state.best_value, state.best_epoch = value, state.epoch
            state.best_metrics = dict(metrics)
            state.stale_epochs = 0
            return True
        state.stale_epochs = state.epoch - state.best_epoch
        return False

    def should_stop(self, state: LoopState) -> bool:
        return state.stale_epochs >= self.patience


@dataclass
class CheckpointSchedule:
    """When to write the full checkpoint: every ``every_epochs`` epochs (0: never by count) or
    once ``every_seconds`` have passed since the last one (0: never by time), and always when the
    loop ends. Resume stays exact: an interrupted run restarts from the last checkpoint and
    repeats the epochs after it, drawing the same numbers."""

    every_epochs: int = 0
    every_seconds: float = 60.0
    _last: float = field(default_factory=time.monotonic, repr=False)

    def due(self, epoch: int, final: bool) -> bool:
        now = time.monotonic()
        by_epochs = self.every_epochs > 0 and epoch % self.every_epochs == 0
        by_time = self.every_seconds > 0 and now - self._last >= self.every_seconds
        if final or by_epochs or by_time:
            self._last = now
            return True
        return False


def save_checkpoint(path: Path, tree: dict[str, Any]) -> None:
    """Write ``tree`` (tensors, state dicts, numbers, strings, lists, dicts) atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(tree, tmp)


def load_checkpoint(path: Path, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a file written by :func:`save_checkpoint`, refusing anything but plain values.

    Raises:
        TrainingError: one line naming the file, when it is missing, truncated, not a
            checkpoint, or holds pickled objects (which are never executed).
    """
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"{path} does not exist: the run has not saved it yet")
    try:
        tree = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise TrainingError(
            f"{path} holds pickled Python objects, which lmmrec never loads (they can run code); "
            "delete the file and train again"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise TrainingError(
            f"{path} is damaged or not an lmmrec checkpoint ({reason}); delete it and train again"
        ) from None
    if not isinstance(tree, dict):
        raise TrainingError(f"{path} is not an lmmrec checkpoint; delete it and train again")
    return tree


def rng_states(rng: np.random.Generator) -> dict[str, Any]:
    """The NumPy generator's, torch's CPU and (when present) CUDA generators' states."""
    states: dict[str, Any] = {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(rng: np.random.Generator, states: dict[str, Any]) -> None:
    """Undo :func:`rng_states` (CUDA states are restored when both runs have CUDA)."""
    rng.bit_generator.state = states["numpy"]
    torch.set_rng_state(states["torch"].cpu())
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in states["cuda"]])


@contextlib.contextmanager
def file_log(logger: logging.Logger, path: Path | None) -> Iterator[None]:
    """Mirror ``logger`` (INFO and above) into ``path`` while the block runs; nothing if None."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()
