"""The fine-tuning paradigm: adapt an item encoder on a dataset's (image, text) pairs, then save it.

The paper (Yi et al., arXiv 2310.20343) fine-tunes CLIP and VLMo "with recommendation datasets"
before extracting item features; its code gives VLMo's own pre-training losses (ITC, ITM with hard
negatives, MLM; ``shared/reference/paper.md`` §4.1) and CLIP's symmetric contrastive loss. Here:

* **pairs**: the (image, text) of every item with a training interaction (new items never leak
  in); items without an image reference or a text, and images that cannot be decoded, are
  skipped and counted. A seeded share of the pairs (``holdout``) is held out;
* **objective**: :func:`~lmmrec.encoders.objectives.contrastive_loss` with the encoder's
  learnable temperature (:meth:`~lmmrec.encoders.base.ItemEncoder.contrastive_scale`) for CLIP,
  ``dual`` and any encoder with image and text outputs; for VLMo, its ITC (both branches when the
  model has the VL-FFN ITC head) plus ITM with hard negatives drawn from the contrastive
  similarities, plus MLM when asked (:mod:`lmmrec.encoders.vlmo.objectives`);
* **what trains**: a strategy of :meth:`~lmmrec.encoders.base.ItemEncoder.apply_strategy`
  (``projection``, ``top:N``, ``lora:R``, ``full``) plus the objective's own parameters (the
  temperature, VLMo's ITM/MLM heads); when only ``dual``'s heads train, the towers' vectors are
  computed once (:class:`TowerCache`);
* **optimisation**: AdamW (no weight decay on biases, norms and the temperature), linear
  warm-up then cosine decay to 0, gradient-norm clipping, bf16 autocast on CUDA, optional
  activation checkpointing; shuffled item batches decoded in DataLoader workers;
* **selection**: image->text and text->image Recall@1/5/10 on the held-out pairs before training
  and after every epoch; early stopping on their mean; the encoder of the best epoch is saved
  with :meth:`~lmmrec.encoders.base.ItemEncoder.save` (its lineage records this config and the
  scores);
* **durability**: the loop pieces of :mod:`lmmrec.loop` (state, early stopping, checkpoints
  without pickles, RNG states, log). An interrupted run resumes from its last checkpoint and ends
  exactly where an uninterrupted one would.

Dimensions: B pairs per batch, D embedding size (D_m of modality m's tower).
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from lmmrec.data.dataset import Dataset
from lmmrec.encoders.base import ItemEncoder, Strategy
from lmmrec.encoders.features import PRESENT, CatalogBatches
from lmmrec.encoders.objectives import contrastive_loss, retrieval_recall
from lmmrec.encoders.towers import heads_only, stored_tower_vectors
from lmmrec.errors import ConfigError, DataError, TrainingError, validation_problems
from lmmrec.io import hash_arrays
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
from lmmrec.runtime import DeviceChoice, PrecisionChoice, Runtime, seed_everything

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "lmmrec-finetune"
SELECT_METRIC = "mean_recall"
INPUTS = ("image", "text")
# settings that do not change the result: a run may resume with other values
OPERATIONAL = {"num_workers", "eval_batch_size", "checkpoint_every", "device"}


class FinetuneConfig(BaseModel):
    """How an encoder is fine-tuned (module docstring). Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    strategy: str = Field(
        "projection", description="what trains: projection, top:N, lora:R or full"
    )
    lr: float = Field(1e-4, gt=0, description="peak AdamW learning rate")
    weight_decay: float = Field(0.01, ge=0, description="AdamW decay of matrices (not 1-d)")
    warmup: float = Field(0.1, ge=0, lt=1, description="share of steps with linear warm-up")
    epochs: int = Field(10, gt=0, description="maximum epochs over the training pairs")
    batch_size: int = Field(64, ge=2, description="pairs per step (the contrastive negatives)")
    eval_batch_size: int = Field(128, ge=1, description="items per encoder call in evaluation")
    holdout: float = Field(0.1, gt=0, lt=1, description="share of pairs held out for retrieval")
    max_holdout: int = Field(1000, ge=2, description="at most this many held-out pairs")
    patience: int = Field(3, ge=1, description="epochs without a better held-out score to stop")
    grad_clip: float = Field(1.0, ge=0, description="gradient-norm clip (0: off)")
    itm: bool | None = Field(None, description="VLMo: image-text matching (default: on)")
    mlm: bool = Field(False, description="VLMo: masked language modelling as well")
    mlm_probability: float = Field(0.15, gt=0, lt=1, description="VLMo: share of tokens masked")
    activation_checkpointing: bool = Field(False, description="recompute activations (memory)")
    num_workers: int = Field(0, ge=0, description="DataLoader processes decoding the items")
    seed: int = Field(0, description="seeds the hold-out, the shuffles and the draws")
    device: DeviceChoice = Field("auto", description="auto (CUDA when present), cpu or cuda")
    precision: PrecisionChoice = Field("auto", description="auto (bf16 on CUDA), fp32 or bf16")
    checkpoint_every: int = Field(1, ge=1, description="epochs between resumable checkpoints")
    cache_towers: bool = Field(
        True, description="only heads train: compute the tower outputs once (dual; no dropout)"
    )

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        try:
            parsed = Strategy.parse(value)
        except ConfigError as error:
            raise ValueError(str(error)) from None
        if parsed.kind == "frozen":
            raise ValueError(
                "strategy 'frozen' trains nothing; use projection, top:N, lora:R or full"
            )
        return value.strip().lower()


def finetune_config(
    data: dict[str, Any] | None = None, overrides: Iterable[str] = ()
) -> FinetuneConfig:
    """A :class:`FinetuneConfig` from a mapping and ``key=value`` strings (values read as YAML).

    Raises:
        ConfigError: an unknown key or a bad value, all problems in one line.
    """
    from lmmrec.training.config import _parse_override

    values = dict(data or {})
    for text in overrides:
        path, value = _parse_override(text)
        values[".".join(path)] = value
    try:
        return FinetuneConfig(**values)
    except ValidationError as error:
        problems = validation_problems(error, FinetuneConfig)
        raise ConfigError(f"fine-tuning config: {problems}") from None


@dataclass(frozen=True)
class Pairs:
    """The fine-tuning pairs of a dataset: item indices and what was left out.

    Attributes:
        train, holdout: item indices (sorted) of the training and held-out pairs.
        counts: ``items`` (with a training interaction), ``no_image``, ``no_text`` (those lacking
            the input; an item lacking both counts in both), ``skipped`` (items lacking either).
    """

    train: np.ndarray
    holdout: np.ndarray
    counts: dict[str, int]


def training_pairs(dataset: Dataset, config: FinetuneConfig) -> Pairs:
    """Items with a training interaction and both an image reference and a text, split (seeded)
    into training and held-out pairs.

    Raises:
        DataError: no catalog, or too few pairs for a held-out set and a batch.
    """
    catalog = dataset.catalog
    if catalog is None:
        raise DataError(
            f"dataset {dataset.name!r} has no item catalog (texts, images) to fine-tune on"
        )
    in_train = np.flatnonzero(np.diff(dataset.train.tocsc().indptr) > 0)
    has_image = np.array([catalog.image_path(i) is not None for i in in_train], dtype=bool)
    has_text = np.array([bool(catalog.texts[i].strip()) for i in in_train], dtype=bool)
    usable = in_train[has_image & has_text]
    order = np.random.default_rng(config.seed).permutation(usable)
    n_holdout = min(max(round(config.holdout * len(usable)), 2), config.max_holdout)
    counts = {
        "items": len(in_train),
        "no_image": int((~has_image).sum()),
        "no_text": int((~has_text).sum()),
        "skipped": int(len(in_train) - len(usable)),
    }
    if len(usable) - n_holdout < 2:
        raise DataError(
            f"dataset {dataset.name!r} has {len(usable)} training items with both an image and a "
            f"text ({counts}); fine-tuning needs at least {n_holdout + 2}"
        )
    return Pairs(np.sort(order[n_holdout:]), np.sort(order[:n_holdout]), counts)


@dataclass
class FinetuneResult:
    """What :func:`finetune` did.

    Attributes:
        folder: the saved encoder of the best epoch (:func:`lmmrec.encoders.load_encoder`).
        before, after: held-out retrieval (``i2t@K``, ``t2i@K``, ``mean_recall``) before
            training and at the best epoch.
        best_epoch, epochs_run: the selected epoch and the epochs trained.
        history: per epoch: mean losses, learning rate, seconds and the held-out scores.
        pairs: training / held-out pairs and the items skipped (no image, no text, unreadable).
        seconds: wall time of the epochs (this run and the resumed ones).
    """

    folder: Path
    before: dict[str, float]
    after: dict[str, float]
    best_epoch: int
    epochs_run: int
    history: list[dict[str, Any]]
    pairs: dict[str, int]
    seconds: float
    checkpoint: Path = field(repr=False, default=Path())

    def encoder(self, **options: Any) -> ItemEncoder:
        """The fine-tuned encoder, loaded from :attr:`folder`."""
        from lmmrec.encoders.saved import load_encoder

        return load_encoder(self.folder, **options)


# -- objectives ------------------------------------------------------------------------------


class Objective(ABC):
    """The loss of one batch of aligned pairs, and the parameters the loss itself owns."""

    @abstractmethod
    def parameters(self) -> list[nn.Parameter]:
        """The parameters the objective owns (a temperature, VLMo's heads)."""

    @abstractmethod
    def __call__(
        self, encoder: ItemEncoder, inputs: dict[str, torch.Tensor], generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Inputs of B >= 2 aligned pairs -> total loss (), and its parts by name."""


class ContrastiveObjective(Objective):
    """CLIP's symmetric ITC on the encoder's ``image`` and ``text`` outputs (B, D)."""

    def __init__(self, encoder: ItemEncoder) -> None:
        dims = encoder.output_dims()
        missing = [m for m in INPUTS if m not in dims]
        if missing:
            raise ConfigError(
                f"encoder {encoder.spec!r} makes no {' or '.join(missing)} vectors; fine-tuning "
                "aligns images with texts (use clip, dual or vlmo)"
            )
        if "fused" not in dims:  # encoders with a shared space fuse in it (clip, dual, vlmo)
            raise ConfigError(
                f"encoder {encoder.spec!r} has no shared image-text space (two separate "
                "towers); use dual:<image spec>+<text spec>"
            )
        self.log_scale = encoder.contrastive_scale()

    def parameters(self) -> list[nn.Parameter]:
        return [self.log_scale]

    def __call__(
        self, encoder: ItemEncoder, inputs: dict[str, torch.Tensor], generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = encoder(inputs)
        loss, _ = contrastive_loss(out["image"], out["text"], self.log_scale)
        return loss, {"itc": loss}


class VLMoObjective(Objective):
    """VLMo's ITC (+ VL-FFN ITC), ITM with hard negatives, and optionally MLM."""

    def __init__(self, encoder: ItemEncoder, config: FinetuneConfig) -> None:
        model = encoder.model
        heads = model.config.heads
        self.model, self.itm, self.mlm = model, config.itm is not False, config.mlm
        self.mlm_probability = config.mlm_probability
        needed = [h for h, on in (("itm", self.itm), ("mlm", self.mlm)) if on and h not in heads]
        if needed:
            raise ConfigError(
                f"VLMo fine-tuning with {'+'.join(needed).upper()} needs the checkpoint's "
                f"{needed} heads: build the encoder with pretraining_heads=true (or set "
                f"{'=false '.join(needed)}=false)"
            )
        tokenizer = encoder.preprocessor.text.tokenizer
        self.special_ids = list(tokenizer.all_special_ids)
        self.mask_id = tokenizer.mask_token_id
        self.heads = ["itc"] + (["itc_vl"] if "itc_vl" in heads else [])
        self.heads += (["itm"] if self.itm else []) + (["mlm"] if self.mlm else [])

    def parameters(self) -> list[nn.Parameter]:
        from lmmrec.encoders.vlmo.checkpoint import HEAD_PREFIXES

        modules = {name for head in self.heads for name in HEAD_PREFIXES[head]}
        return [p for name, p in self.model.named_parameters() if name.split(".", 1)[0] in modules]

    def __call__(
        self, encoder: ItemEncoder, inputs: dict[str, torch.Tensor], generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        from lmmrec.encoders.objectives import symmetric_contrastive_loss
        from lmmrec.encoders.vlmo import objectives as vlmo

        model = self.model
        image, ids, mask = inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"]
        parts: dict[str, torch.Tensor] = {}
        if "itc_vl" in self.heads:
            itc = vlmo.compute_itc(model, image, ids, mask)
            parts["itc"], i2t = itc.loss, itc.i2t_logits
        else:
            image_feats = model.forward_image(image).cls_feats  # (B, D), unit norm
            text_feats = model.forward_text(ids, mask).cls_feats  # (B, D), unit norm
            parts["itc"], i2t = symmetric_contrastive_loss(
                image_feats, text_feats, model.logit_scale.exp()
            )
        if self.itm:
            parts["itm"] = vlmo.compute_itm(model, image, ids, mask, i2t, generator).loss
        if self.mlm:
            masked, labels = vlmo.mask_tokens(
                ids,
                mask,
                special_ids=self.special_ids,
                mask_id=self.mask_id,
                vocab_size=model.config.vocab_size,
                probability=self.mlm_probability,
                generator=generator,
            )
            if (labels != -100).any():  # a batch of very short texts may mask nothing
                parts["mlm"] = vlmo.compute_mlm(model, image, masked, mask, labels).loss
        return sum(parts.values()), parts


def objective_for(encoder: ItemEncoder, config: FinetuneConfig) -> Objective:
    """VLMo's objectives for a VLMo encoder, the contrastive loss for every other."""
    if encoder.name == "vlmo":
        return VLMoObjective(encoder, config)
    if config.itm or config.mlm:
        raise ConfigError(
            f"itm and mlm are VLMo objectives; encoder {encoder.spec!r} fine-tunes with the "
            "contrastive loss only (drop itm/mlm)"
        )
    return ContrastiveObjective(encoder)


# -- the loop --------------------------------------------------------------------------------


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay to 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def _optimizer(encoder: ItemEncoder, config: FinetuneConfig, fused: bool) -> torch.optim.AdamW:
    """AdamW over the trainable parameters: decay on matrices, none on biases, norms, scales."""
    trainable = [p for p in encoder.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if p.ndim >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr, fused=fused)


def usable_batches(
    encoder: ItemEncoder,
    dataset: Dataset,
    items: np.ndarray,
    *,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    unreadable: set[int],
    desc: str | None = None,
) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """Batches of ``items``' pairs decoded in DataLoader workers, restricted to the rows whose
    image loads (the others are added to ``unreadable``), on ``device``: (items, inputs).

    ``desc`` names a progress bar (None: no bar).
    """
    batches = CatalogBatches(
        dataset.catalog, encoder.preprocessor, INPUTS, 0, batch_size, items=items
    )
    loader = DataLoader(
        batches,
        batch_size=None,  # CatalogBatches yields whole batches
        num_workers=num_workers,
        prefetch_factor=2 if num_workers else None,
        generator=torch.Generator(),  # leaves the global RNG (dropout) to the model
    )
    bar = tqdm(loader, desc=desc, unit="batch", disable=desc is None, leave=False)
    for b, (status, inputs) in enumerate(bar):
        rows = batches.rows(b)
        ok = (status["image"] == PRESENT) & (status["text"] == PRESENT)
        unreadable.update(r for r, good in zip(rows, ok, strict=True) if not good)
        keep = torch.as_tensor(np.asarray(ok))
        yield (
            [r for r, good in zip(rows, ok, strict=True) if good],
            {k: v[keep].to(device, non_blocking=True) for k, v in inputs.items()},
        )


@torch.no_grad()
def evaluate_retrieval(
    encoder: ItemEncoder,
    dataset: Dataset,
    items: np.ndarray,
    *,
    runtime: Runtime | None = None,
    batch_size: int = 128,
    num_workers: int = 0,
    unreadable: set[int] | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Image<->text Recall@1/5/10 among ``items``' pairs (those whose image loads), with the
    encoder's ``image`` and ``text`` outputs in eval mode.

    Args:
        unreadable: a set that collects the items whose image could not be decoded.
    """
    runtime = runtime or Runtime.resolve("auto", "auto")
    was_training = encoder.training
    encoder.eval()
    vectors: dict[str, list[torch.Tensor]] = {"image": [], "text": []}
    batches = usable_batches(
        encoder,
        dataset,
        items,
        batch_size=batch_size,
        num_workers=num_workers,
        device=runtime.device,
        unreadable=set() if unreadable is None else unreadable,
        desc="retrieval" if progress else None,
    )
    try:
        with runtime.autocast():
            for _, inputs in batches:
                out = encoder(inputs)
                for modality in vectors:
                    vectors[modality].append(out[modality].float().cpu())  # (B, D)
    finally:
        encoder.train(was_training)
    return retrieval_recall(torch.cat(vectors["image"]), torch.cat(vectors["text"]))


def _data_hash(dataset: Dataset, pairs: Pairs) -> str:
    return hash_arrays(
        np.frombuffer(dataset.content_hash().encode(), dtype=np.uint8), pairs.train, pairs.holdout
    )


class TowerCache:
    """Outputs of an encoder's frozen towers for the fine-tuning pairs, computed once.

    When only the heads above the towers train (``projection``) and the encoder's forward is
    ``project(towers(inputs), inputs)`` (``dual``), each pair's tower vectors are taken from a
    feature set that those towers made (:mod:`lmmrec.encoders.towers`) or computed once, in eval
    mode, and every epoch trains the heads on them: an epoch then costs the heads, not
    the towers. Exact for towers without dropout; for others it trains as if their dropout were off
    (the usual linear-probe setting; ``cache_towers=false`` keeps it on).

    Attributes:
        rows: item index -> row of the cached matrices.
        vectors: ``{"image": [n, D_i], "text": [n, D_t]}`` tower outputs of the usable pairs.
    """

    def __init__(self, run: _Run) -> None:
        items = np.concatenate([run.pairs.train, run.pairs.holdout])
        stored = stored_tower_vectors(run.encoder, run.dataset.features.values())
        if stored is not None:  # vectors the towers already made: row = item
            self.rows = {int(item): int(item) for item in items}
            self.vectors = {m: v.to(run.runtime.device) for m, v in stored.items()}
            return
        self.rows: dict[int, int] = {}
        parts: dict[str, list[torch.Tensor]] = {m: [] for m in INPUTS}
        encoder = run.encoder
        encoder.eval()
        with torch.inference_mode(), run.runtime.autocast():
            for rows, inputs in run.loaded(items, run.config.eval_batch_size, "tower outputs"):
                towers = encoder.towers(inputs)
                for modality in INPUTS:
                    parts[modality].append(towers[modality].float())  # (B, D_m)
                first = len(self.rows)
                self.rows.update((item, first + i) for i, item in enumerate(rows))
        self.vectors = {m: torch.cat(v) for m, v in parts.items()}

    def batch(self, items: list[int]) -> dict[str, torch.Tensor]:
        """Cached tower vectors ``{modality: [B, D_m]}`` of the given (usable) items."""
        index = torch.tensor([self.rows[i] for i in items], device=self.vectors["image"].device)
        return {m: v[index] for m, v in self.vectors.items()}


class _Heads(nn.Module):
    """Stands for the encoder in the objective when the towers are cached: inputs are the
    cached tower vectors, outputs the projected ``image`` / ``text``."""

    def __init__(self, encoder: ItemEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, towers: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return _project(self.encoder, towers)


def _project(encoder: ItemEncoder, towers: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The encoder's heads on tower vectors of pairs (both inputs present)."""
    present = torch.ones(len(towers["image"]), dtype=torch.bool, device=towers["image"].device)
    return encoder.project(towers, {"image_present": present, "text_present": present})


@dataclass
class _Run:
    """One fine-tuning run's working parts (the loop is :func:`finetune`)."""

    encoder: ItemEncoder
    dataset: Dataset
    pairs: Pairs
    config: FinetuneConfig
    runtime: Runtime
    objective: Objective
    optimizer: torch.optim.Optimizer
    schedule: tuple[int, int]  # warm-up steps, total steps
    progress: bool
    np_rng: np.random.Generator
    draws: torch.Generator
    unreadable: set[int] = field(default_factory=set)
    cache: TowerCache | None = None

    def loaded(
        self, items: np.ndarray, batch_size: int, desc: str | None
    ) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
        """:func:`usable_batches` with this run's workers, device and ``unreadable`` set."""
        return usable_batches(
            self.encoder,
            self.dataset,
            items,
            batch_size=batch_size,
            num_workers=self.config.num_workers,
            device=self.runtime.device,
            unreadable=self.unreadable,
            desc=desc if self.progress else None,
        )

    def evaluate(self) -> dict[str, float]:
        """Held-out retrieval (:func:`evaluate_retrieval`, or from the cached towers)."""
        if self.cache is None:
            return evaluate_retrieval(
                self.encoder,
                self.dataset,
                self.pairs.holdout,
                runtime=self.runtime,
                batch_size=self.config.eval_batch_size,
                num_workers=self.config.num_workers,
                unreadable=self.unreadable,
                progress=self.progress,
            )
        held_out = [i for i in self.pairs.holdout.tolist() if i in self.cache.rows]
        self.encoder.eval()
        with torch.no_grad(), self.runtime.autocast():
            out = _project(self.encoder, self.cache.batch(held_out))
        return retrieval_recall(out["image"].float().cpu(), out["text"].float().cpu())

    def _batches(self, order: np.ndarray) -> Iterator[dict[str, torch.Tensor]]:
        """The epoch's training batches (>= 2 usable pairs each), as the objective's inputs."""
        size = self.config.batch_size
        if self.cache is None:
            for rows, inputs in self.loaded(order, size, None):  # the epoch has its own bar
                if len(rows) >= 2:
                    yield inputs
            return
        for start in range(0, len(order), size):
            usable = [i for i in order[start : start + size].tolist() if i in self.cache.rows]
            if len(usable) >= 2:
                yield self.cache.batch(usable)

    def train_epoch(self, state: LoopState) -> dict[str, float]:
        """One pass over the shuffled training pairs; returns the mean losses and the last lr."""
        order = self.np_rng.permutation(self.pairs.train)
        if len(order) % self.config.batch_size == 1:  # a last batch of one pair: no negatives
            order = order[:-1]
        model: nn.Module = self.encoder if self.cache is None else _Heads(self.encoder)
        params = [p for p in self.encoder.parameters() if p.requires_grad]
        sums: dict[str, float] = {}
        steps = 0
        self.encoder.train()
        bar = tqdm(
            self._batches(order),
            desc=f"fine-tune epoch {state.epoch + 1}",
            unit="batch",
            total=math.ceil(len(order) / self.config.batch_size),
            disable=not self.progress,
        )
        for inputs in bar:
            lr = self.config.lr * lr_factor(state.step, *self.schedule)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            with self.runtime.autocast():
                loss, parts = self.objective(model, inputs, self.draws)  # type: ignore[arg-type]
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"fine-tuning loss is {loss.item()} at epoch {state.epoch + 1}, step "
                    f"{state.step}; lower lr (now {self.config.lr:g}) or grad_clip"
                )
            loss.backward()
            if self.config.grad_clip > 0:
                nn.utils.clip_grad_norm_(params, self.config.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            state.step += 1
            steps += 1
            for name, value in {"loss": loss, **parts}.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        self.encoder.eval()
        means = {k: v / max(steps, 1) for k, v in sums.items()} or {"loss": float("nan")}
        return means | {"lr": self.optimizer.param_groups[0]["lr"], "steps": steps}


def finetune(
    encoder: ItemEncoder,
    dataset: Dataset,
    config: FinetuneConfig | None = None,
    *,
    out: str | Path,
    work_dir: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    on_epoch: Callable[[LoopState], None] | None = None,
) -> FinetuneResult:
    """Fine-tune ``encoder`` on ``dataset``'s training items and save the best epoch to ``out``.

    Args:
        encoder: built from its spec (or loaded); it is trained in place and left at its last
            epoch on the config's device: the selected one is in ``out``.
        dataset: a dataset with an item catalog.
        config: :class:`FinetuneConfig` (defaults when None).
        out: folder for the fine-tuned encoder (:meth:`ItemEncoder.save`, best epoch).
        work_dir: checkpoint and ``log.txt``; default ``<out>.work`` beside ``out``.
        resume: continue from the checkpoint in ``work_dir`` if one exists (a finished run is
            returned as it is); False starts again.
        progress: progress bars.
        on_epoch: called with the loop state after each epoch (and its checkpoint).

    Returns:
        :class:`FinetuneResult`.

    Raises:
        ConfigError: a bad config, an encoder without image and text outputs, VLMo objectives
            without their heads, a checkpoint made with another config, several processes.
        DataError: no catalog or too few pairs.
        TrainingError: the loss is not finite.
    """
    config = config or FinetuneConfig()
    out = Path(out).expanduser()
    work = Path(work_dir) if work_dir is not None else out.with_name(out.name + ".work")
    checkpoint_path = work / "checkpoint.pt"
    runtime = Runtime.resolve(config.device, config.precision)
    if runtime.world_size > 1:
        raise ConfigError(
            "fine-tuning runs in one process; start it without torchrun / accelerate launch"
        )
    pairs = training_pairs(dataset, config)
    data_hash = _data_hash(dataset, pairs)
    base_hash = encoder.remember_base_weights()
    objective = objective_for(encoder, config)
    seed_everything(config.seed)  # LoRA's initial A matrices, dropout
    encoder.apply_strategy(config.strategy)
    for parameter in objective.parameters():
        parameter.requires_grad_(True)
    encoder.mark_tuned(objective.parameters())
    if config.activation_checkpointing:
        encoder.set_activation_checkpointing(True)
    encoder.to(runtime.device)
    steps_per_epoch = len(pairs.train) // config.batch_size + (
        len(pairs.train) % config.batch_size >= 2
    )
    total_steps = steps_per_epoch * config.epochs
    run = _Run(
        encoder=encoder,
        dataset=dataset,
        pairs=pairs,
        config=config,
        runtime=runtime,
        objective=objective,
        optimizer=_optimizer(encoder, config, fused=runtime.device.type == "cuda"),
        schedule=(round(config.warmup * total_steps), total_steps),
        progress=progress,
        np_rng=np.random.default_rng(config.seed),
        draws=torch.Generator(device=runtime.device).manual_seed(config.seed),
    )
    trainable = {n: p for n, p in encoder.named_parameters() if p.requires_grad}
    identity = {
        "config": config.model_dump(mode="json", exclude=OPERATIONAL),
        "spec": encoder.spec,
        "base_weights_hash": base_hash,
        "data_hash": data_hash,
    }
    state, stopper = LoopState(), EarlyStopping(SELECT_METRIC, config.patience)
    before: dict[str, float] | None = None
    if resume and checkpoint_path.is_file():
        tree = load_checkpoint(checkpoint_path)
        _check_identity(tree, identity, checkpoint_path)
        state = LoopState.from_dict(tree["state"])
        before, run.unreadable = dict(tree["before"]), set(tree["unreadable"])
        if tree["finished"]:
            logger.info("fine-tuning in %s is finished; returning its result", work)
            return _result(out, before, state, pairs, run.unreadable, checkpoint_path)
        missing = set(trainable) - set(tree["trained"])
        if missing:
            raise ConfigError(f"{checkpoint_path} lacks {sorted(missing)[:3]}; resume=False")
        with torch.no_grad():
            for name, parameter in trainable.items():
                parameter.copy_(tree["trained"][name])
        run.optimizer.load_state_dict(tree["optimizer"])
        restore_rng_states(run.np_rng, tree["rng"])
        run.draws.set_state(tree["draws"])  # a CPU byte tensor for every device
        logger.info("resuming fine-tuning after epoch %d from %s", state.epoch, checkpoint_path)

    lineage = {
        "dataset": dataset.name,
        "data_hash": data_hash,
        "config": config.model_dump(mode="json"),
        "pairs": {"train": len(pairs.train), "holdout": len(pairs.holdout), **pairs.counts},
    }
    schedule = CheckpointSchedule(every_epochs=config.checkpoint_every, every_seconds=0)
    with file_log(logger, work / "log.txt"):
        if _caches_towers(encoder, config, objective):
            run.cache = TowerCache(run)
        if before is None:
            before = run.evaluate()
            logger.info("held-out retrieval before fine-tuning: %s", _scores(before))
        finished = state.epoch >= config.epochs or stopper.should_stop(state)
        while not finished:
            began = time.perf_counter()
            losses = run.train_epoch(state)
            state.epoch += 1
            metrics = run.evaluate()
            improved = stopper.update(state, metrics)
            seconds = time.perf_counter() - began
            state.seconds += seconds
            state.history.append({"epoch": state.epoch, **losses, **metrics, "seconds": seconds})
            logger.info(
                "epoch %d: loss %.4f, held-out %s%s",
                state.epoch,
                losses["loss"],
                _scores(metrics),
                " (best)" if improved else "",
            )
            if improved:
                tuned = lineage | {"epoch": state.epoch, "before": before, "after": metrics}
                encoder.save(out, lineage={"finetune": tuned})
            finished = state.epoch >= config.epochs or stopper.should_stop(state)
            if schedule.due(state.epoch, finished):
                save_checkpoint(
                    checkpoint_path,
                    {
                        "format": CHECKPOINT_FORMAT,
                        **identity,
                        "finished": finished,
                        "state": state.to_dict(),
                        "before": before,
                        "unreadable": sorted(run.unreadable),
                        "trained": {n: p.detach().cpu() for n, p in trainable.items()},
                        "optimizer": run.optimizer.state_dict(),
                        "rng": rng_states(run.np_rng),
                        "draws": run.draws.get_state(),
                    },
                )
            if on_epoch is not None:
                on_epoch(state)
        result = _result(out, before, state, pairs, run.unreadable, checkpoint_path)
        if result.after[SELECT_METRIC] <= result.before[SELECT_METRIC]:
            logger.warning(
                "fine-tuning did not improve held-out retrieval (%.4f -> %.4f); try another lr "
                "or strategy",
                result.before[SELECT_METRIC],
                result.after[SELECT_METRIC],
            )
    return result


def _caches_towers(encoder: ItemEncoder, config: FinetuneConfig, objective: Objective) -> bool:
    """Whether the towers' outputs are computed once (:class:`TowerCache`): the encoder splits
    into ``towers(inputs)`` and ``project(towers, inputs)`` (``dual``) and nothing trains but
    its projection heads and the objective's parameters."""
    return config.cache_towers and heads_only(encoder, objective.parameters())


def _check_identity(tree: dict[str, Any], identity: dict[str, Any], path: Path) -> None:
    if tree.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{path} is not a fine-tuning checkpoint; remove it or pass resume=False")
    differs = [k for k, v in identity.items() if tree.get(k) != v]
    if differs:
        raise ConfigError(
            f"{path} was made by another fine-tuning run (different {', '.join(differs)}); "
            "remove it, choose another output folder or pass resume=False"
        )


def _scores(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in metrics.items())


def _result(
    out: Path,
    before: dict[str, float],
    state: LoopState,
    pairs: Pairs,
    unreadable: set[int],
    checkpoint: Path,
) -> FinetuneResult:
    counts = {"train": len(pairs.train), "holdout": len(pairs.holdout), **pairs.counts}
    counts["unreadable_image"] = len(unreadable)
    counts["skipped"] += len(unreadable)
    return FinetuneResult(
        folder=out,
        before=before,
        after=dict(state.best_metrics),
        best_epoch=state.best_epoch,
        epochs_run=state.epoch,
        history=list(state.history),
        pairs=counts,
        seconds=state.seconds,
        checkpoint=checkpoint,
    )
