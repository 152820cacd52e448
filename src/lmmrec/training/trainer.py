"""The training loop: Adam over a step module's parameter groups, early stopping on validation.

The step module computes the loss (:mod:`lmmrec.training.sources`: stored features for the frozen
and fine-tuned paradigms, :class:`~lmmrec.training.end2end.EndToEnd` for end-to-end); the trainer
owns the loop, the device and precision (``Runtime``), model selection (validation only; test is
ranked once, at the selected epoch, from its weights) and everything written to the run directory:

    checkpoint.pt   last full state for an exact resume (module, optimiser, scheduler, RNG, loop
                    state), written every ``checkpoint_every_epochs`` epochs and/or
                    ``checkpoint_every_seconds`` seconds, and at the end
    best.pt         the step module's weights at the best validation epoch (encoder and bank
                    included end-to-end); kept in memory and written with each checkpoint
    metrics.json    best epoch, valid and test metrics there, per-epoch history, time split
    test_users.npz  every test user's metrics at the best epoch (``users`` and one array per
                    metric), for paired significance tests between runs
    log.txt         one line per epoch

Every file loads without unpickling (:func:`lmmrec.loop.load_checkpoint`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from lmmrec.data.dataset import Dataset
from lmmrec.data.sampling import NegativeSampler
from lmmrec.errors import TrainingError
from lmmrec.evaluation.evaluator import Evaluator
from lmmrec.evaluation.pools import PoolResult, evaluate_pools
from lmmrec.io import atomic_path, read_json, write_json
from lmmrec.loop import (
    CheckpointSchedule,
    EarlyStopping,
    LoopState,
    file_log,
    load_checkpoint,
    restore_rng_states,
    rng_states,
    save_checkpoint,
)
from lmmrec.models.base import ItemFeatures, Recommender
from lmmrec.models.cold_start import content_item_vectors
from lmmrec.models.content_head import ContentHead
from lmmrec.models.content_map import RIDGES, ContentMap, choose_content_map, fit_ridge_path
from lmmrec.runtime import Runtime, release_freed_memory
from lmmrec.training.config import TrainConfig
from lmmrec.training.sources import StepModule, StoredFeatures

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
METRICS = "metrics.json"
TEST_USERS = "test_users.npz"
LOG = "log.txt"
CHECKPOINT_VERSION = 2


@dataclass
class FitResult:
    """Outcome of :meth:`Trainer.fit`: the selected epoch and its metrics.

    ``seconds`` is the wall time of the epochs (training + validation); ``time`` splits the
    whole fit into ``train``, ``valid``, ``test`` and ``checkpoint`` seconds.
    """

    best_epoch: int
    valid: dict[str, float]
    test: dict[str, float]
    epochs_run: int
    stopped_by: str  # "early_stopping" or "max_epochs"
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    time: dict[str, float] = field(default_factory=dict)


EpochCallback = Callable[["Trainer", dict[str, Any]], None]


class Trainer:
    """Trains a recommender on ``dataset`` under ``config``.

    Args:
        step: the step module (:mod:`lmmrec.training.sources`), or a bare recommender, which
            gets a :class:`StoredFeatures` source with no features (ID-only models).
        dataset: provides the training matrix and the valid/test splits.
        config: optimisation, early stopping, evaluation, checkpoint and device settings.
        run_dir: where checkpoints, metrics and the log go; ``None`` keeps nothing on disk.
        callbacks: observers called after every epoch as ``callback(trainer, record)``.
    """

    def __init__(
        self,
        step: StepModule | Recommender,
        dataset: Dataset,
        config: TrainConfig,
        run_dir: Path | None = None,
        callbacks: list[EpochCallback] | None = None,
    ) -> None:
        self.config = config
        self.dataset = dataset
        self.runtime = Runtime.resolve(config.device, config.precision)
        step = step if isinstance(step, StepModule) else StoredFeatures(step)
        self.step_module = step.to(self.runtime.device)
        self.module = self.runtime.wrap(self.step_module)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.callbacks = list(callbacks or [])
        trained = None if config.negatives == "all" else np.flatnonzero(~dataset.cold_items())
        self.sampler = NegativeSampler(dataset.train, trained)
        groups = self.step_module.param_groups(config.lr, config.weight_decay)
        # the fused kernel updates all parameters in one pass: ~9x faster steps on CPU for
        # large embedding tables than the default multi-tensor path, same arithmetic
        self.optimizer = torch.optim.Adam(
            groups, lr=config.lr, fused=self.runtime.device.type in ("cpu", "cuda")
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, [self._lr_factor(g.get("warmup_epochs", 0)) for g in groups]
        )
        self._evaluator_args = {
            "ks": config.ks,
            "batch_size": config.eval_batch_size,
            "device": self.runtime.device,
        }
        self.valid_evaluator = Evaluator(dataset, "valid", **self._evaluator_args)
        self.test_evaluator = Evaluator(
            dataset, "test", mask_valid_at_test=config.mask_valid_at_test, **self._evaluator_args
        )
        self.rng = np.random.default_rng(config.seed)
        self.state = LoopState()
        self.stopping = EarlyStopping(config.valid_metric, config.patience)
        self.schedule = CheckpointSchedule(
            config.checkpoint_every_epochs, config.checkpoint_every_seconds
        )
        self._best: dict[str, torch.Tensor] | None = None  # best weights not yet on disk
        self._time = dict.fromkeys(("train", "valid", "test", "checkpoint"), 0.0)

    @property
    def model(self) -> Recommender:
        """The recommender being trained."""
        return self.step_module.recommender

    def _lr_factor(self, warmup_epochs: int) -> Callable[[int], float]:
        """Learning-rate factor after ``epoch`` epochs: linear warm-up, then ``lr_decay``."""
        decay, step = self.config.lr_decay, self.config.lr_decay_step

        def factor(epoch: int) -> float:
            warm = min(1.0, (epoch + 1) / (warmup_epochs + 1)) if warmup_epochs else 1.0
            return warm * decay ** (epoch / step)

        return factor

    # ----------------------------------------------------------------- evaluation
    def embed(self, item_feats: ItemFeatures | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The recommender's final user and item vectors ``([U, D], [I, D])``, computed once
        from the step module's current item features (or ``item_feats``, already taken from
        it), without gradients."""
        if item_feats is None:
            item_feats = self.item_features()
        self.step_module.eval()
        with torch.inference_mode(), self.runtime.autocast():
            users, items = self.model.embed(item_feats)
        self.step_module.train()
        return users.detach().float(), items.detach().float()  # BPR's embed is its parameters

    def item_features(self) -> ItemFeatures:
        """Every item's features ``{modality: [I, d_m]}`` as the step module gives them now, for
        evaluation (end to end: encoded under inference mode; empty for ID-only runs)."""
        self.step_module.eval()
        with torch.no_grad(), self.runtime.autocast():
            item_feats = self.step_module.item_features()
        self.step_module.train()
        return item_feats

    def evaluate_pools(self, split: str = "test") -> list[PoolResult]:
        """Item cold-start evaluation of the model as it is now: ``split`` ranked in the pools
        of all, warm and cold items, the cold items also placed from their content alone, by
        the model's own content part (``content``) and by a ridge map fitted on the warm items
        (``mapped``, :meth:`content_map`), where the model can (:mod:`lmmrec.evaluation.pools`)."""
        return self.evaluate_pools_of((split,))[split]

    def evaluate_pools_of(self, splits: tuple[str, ...]) -> dict[str, list[PoolResult]]:
        """:meth:`evaluate_pools` of each of ``splits``, with the catalogue encoded (end to end)
        and the cold items placed once for all of them."""
        item_feats = self.item_features()
        users, items = self.embed(item_feats)
        cold = torch.from_numpy(self.dataset.cold_items()).to(self.runtime.device)
        placements = {}
        if cold.any():
            cold_feats = {m: f[cold].float() for m, f in item_feats.items()}
            content = content_item_vectors(self.model, cold_feats)
            if content is not None:
                placements["content"] = content
            if item_feats:
                mapped = self.content_map(item_feats, (users, items))
                placements["mapped"] = mapped.head.to(self.runtime.device)(cold_feats)
        results = {
            split: evaluate_pools(
                self.dataset,
                split,
                users,
                items,
                placements,
                mask_valid_at_test=split == "test" and self.config.mask_valid_at_test,
                **self._evaluator_args,
            )
            for split in splits
        }
        release_freed_memory()
        return results

    def content_map(
        self,
        item_feats: ItemFeatures | None = None,
        vectors: tuple[torch.Tensor, torch.Tensor] | None = None,
        ridges: tuple[float, ...] = RIDGES,
    ) -> ContentMap:
        """A ridge map from item features to this model's item vectors, fitted on the warm
        items (:mod:`lmmrec.models.content_map`), for placing new items. The penalty is the one
        whose map, placing the cold items, gives the best validation ``valid_metric`` in the
        full ranking; without held-out interactions on cold items to judge by, the one with
        the least leave-one-out error.

        Args:
            item_feats: every item's features, ``{modality: [I, d_m]}`` (default: the step
                module's, as :meth:`embed` reads them).
            vectors: ``([U, D], [I, D])`` from :meth:`embed` of those features, if at hand.

        Raises:
            DataError: the model was trained without item features.
        """
        item_feats = self.item_features() if item_feats is None else item_feats
        users, items = self.embed(item_feats) if vectors is None else vectors
        cold_items = self.dataset.cold_items()  # [I] bool
        cold = torch.from_numpy(cold_items).to(items.device)
        warm_feats = {m: f[~cold] for m, f in item_feats.items()}
        path = fit_ridge_path(warm_feats, items[~cold], ridges)
        metric = self.config.valid_metric
        if self.dataset.split("valid")[:, np.flatnonzero(cold_items)].nnz == 0:
            return choose_content_map(path)
        cold_feats = {m: f[cold].float() for m, f in item_feats.items()}

        def score(head: ContentHead) -> float:
            placed = items.clone()
            placed[cold] = head.to(items.device)(cold_feats)
            return self.valid_evaluator.evaluate(users, placed)[metric]

        return choose_content_map(path, score, f"valid {metric}")

    def evaluate(self, split: str = "test") -> dict[str, float]:
        """Metrics of the model as it is now on ``split`` (``"valid"`` or ``"test"``)."""
        evaluator = self.valid_evaluator if split == "valid" else self.test_evaluator
        metrics = evaluator.evaluate(*self.embed())
        release_freed_memory()
        return metrics

    # ----------------------------------------------------------------- training
    def train_epoch(self) -> float:
        """One pass over the training interactions; returns the mean loss."""
        self.step_module.train()
        self.step_module.on_epoch_start(self.state.epoch)
        total = torch.zeros((), device=self.runtime.device)
        n_batches = self.sampler.n_batches(self.config.batch_size, self.runtime.world_size)
        batches = self.sampler.epoch(
            self.config.batch_size,
            self.rng,
            self.runtime.device,
            shard=(self.runtime.rank, self.runtime.world_size),
        )
        progress = tqdm(
            batches,
            total=n_batches,
            leave=False,
            desc=f"epoch {self.state.epoch + 1}",
            disable=None if self.runtime.is_main and n_batches >= 50 else True,
            unit="batch",
        )
        for batch in progress:
            with self.runtime.autocast():
                loss = self.module(batch)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.state.step += 1
            self.step_module.on_step_end(self.state.step)
            total += loss.detach()
        release_freed_memory()  # what the steps kept for reuse, before evaluation allocates
        mean = float(total) / max(n_batches, 1)
        if not math.isfinite(mean):
            raise TrainingError(
                f"the training loss became {mean} in epoch {self.state.epoch + 1}; lower the "
                f"learning rate (now {self.config.lr}) or the regularisation weights"
            )
        self.scheduler.step()
        return mean

    def fit(self, resume: bool = True) -> FitResult:
        """Train until early stopping or ``config.epochs``; resumes from ``checkpoint.pt`` if any.

        Returns the validation metrics at the best epoch and the test metrics of the weights of
        that epoch (ranked once, after training).
        """
        if resume:
            self._resume()
        config, state = self.config, self.state
        log_path = self.run_dir / LOG if self.run_dir is not None and self.runtime.is_main else None
        epochs = tqdm(
            total=config.epochs,
            initial=state.epoch,
            desc=self.model.name,
            unit="epoch",
            disable=None if self.runtime.is_main else True,
        )
        with file_log(logger, log_path):
            try:
                while state.epoch < config.epochs and not self.stopping.should_stop(state):
                    record = self._run_epoch()
                    done = state.epoch >= config.epochs or self.stopping.should_stop(state)
                    if self.schedule.due(state.epoch, final=done):
                        self._checkpoint()
                    epochs.update(1)
                    epochs.set_postfix(
                        loss=f"{record['loss']:.4f}",
                        **{config.valid_metric: f"{state.best_value:.4f}"},
                    )
                    logger.info(_format_record(record, config.valid_metric))
                    for callback in self.callbacks:
                        callback(self, record)
            finally:
                epochs.close()
            test = self._test_at_best()
        stopped_by = "early_stopping" if self.stopping.should_stop(state) else "max_epochs"
        result = FitResult(
            best_epoch=state.best_epoch,
            valid=state.best_metrics,
            test=test,
            epochs_run=state.epoch,
            stopped_by=stopped_by,
            seconds=state.seconds,
            history=state.history,
            time=dict(self._time),
        )
        if self.run_dir is not None and self.runtime.is_main:
            write_json(self.run_dir / METRICS, asdict(result))
        return result

    def _run_epoch(self) -> dict[str, Any]:
        """Train one epoch, validate when due; the epoch's history record."""
        state, config = self.state, self.config
        started = time.perf_counter()
        loss = self.train_epoch()
        state.epoch += 1
        trained = time.perf_counter()
        record: dict[str, Any] = {
            "epoch": state.epoch,
            "loss": loss,
            "train_seconds": trained - started,
        }
        self._time["train"] += trained - started
        if state.epoch % config.eval_every == 0 or state.epoch == config.epochs:
            record["valid"] = self.evaluate("valid")
            if self.stopping.update(state, record["valid"]):
                self._best = {
                    k: v.detach().to("cpu", copy=True)
                    for k, v in self.step_module.state_dict().items()
                }
            self._time["valid"] += time.perf_counter() - trained
        record["seconds"] = time.perf_counter() - started
        state.seconds += record["seconds"]
        state.history.append(record)
        return record

    def _test_at_best(self) -> dict[str, float]:
        """Load the best epoch's weights and rank the test split once."""
        if self.state.best_epoch == 0:
            return {}
        started = time.perf_counter()
        best = self._best
        if best is None and self.run_dir is not None:
            best = load_checkpoint(self.run_dir / BEST, self.runtime.device)
        if best is not None:
            self.step_module.load_state_dict(best)
        per_user = self.test_evaluator.evaluate(*self.embed(), per_user=True)
        release_freed_memory()
        if self.run_dir is not None and self.runtime.is_main:  # for paired tests across runs
            with atomic_path(self.run_dir / TEST_USERS) as tmp, open(tmp, "wb") as file:
                np.savez(file, **per_user.arrays())
        self._time["test"] += time.perf_counter() - started
        return per_user.mean()

    # ----------------------------------------------------------------- persistence
    def _checkpoint(self) -> None:
        if self.run_dir is None or not self.runtime.is_main:
            return
        started = time.perf_counter()
        if self._best is not None:
            save_checkpoint(self.run_dir / BEST, self._best)
            self._best = None
        save_checkpoint(
            self.run_dir / CHECKPOINT,
            {
                "version": CHECKPOINT_VERSION,
                "module": self.step_module.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "state": self.state.to_dict(),
                "rng": rng_states(self.rng),
            },
        )
        self._time["checkpoint"] += time.perf_counter() - started

    def _resume(self) -> None:
        path = None if self.run_dir is None else self.run_dir / CHECKPOINT
        if path is None or not path.is_file():
            return
        saved = load_checkpoint(path, self.runtime.device)
        if saved.get("version") != CHECKPOINT_VERSION:
            raise TrainingError(
                f"{path} was written by another version of lmmrec; train again with --no-resume"
            )
        try:
            self.step_module.load_state_dict(saved["module"])
            self.optimizer.load_state_dict(saved["optimizer"])
        except (RuntimeError, ValueError, KeyError) as error:
            reason = str(error).splitlines()[0]
            raise TrainingError(
                f"{path} does not fit this run ({reason}); train again with --no-resume"
            ) from None
        self.scheduler.load_state_dict(saved["scheduler"])
        self.state = LoopState.from_dict(saved["state"])
        restore_rng_states(self.rng, saved["rng"])
        logger.info("resumed from %s at epoch %d", path, self.state.epoch)


def load_best(step: StepModule, run_dir: Path) -> StepModule:
    """Load the best-epoch weights saved in ``run_dir`` into ``step``."""
    path = Path(run_dir) / BEST
    if not path.is_file():
        raise TrainingError(f"{path} does not exist: the run has not finished a validation yet")
    try:
        step.load_state_dict(load_checkpoint(path))
    except RuntimeError as error:
        raise TrainingError(
            f"{path} does not fit the run's model ({str(error).splitlines()[0]}); train again"
        ) from None
    return step


def read_metrics(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / METRICS
    if not path.is_file():
        raise TrainingError(f"{path} does not exist: the run has not finished")
    return read_json(path)


def _format_record(record: dict[str, Any], metric: str) -> str:
    text = f"epoch {record['epoch']}: loss {record['loss']:.5f} ({record['train_seconds']:.2f} s)"
    if "valid" in record:
        text += f", valid {metric} {record['valid'][metric]:.4f}"
    return text
