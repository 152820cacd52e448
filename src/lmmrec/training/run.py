"""Training runs end to end: dataset + model + trainer + run directory, from a :class:`RunConfig`.

A run directory holds ``config.json`` (the resolved configuration, model defaults filled in),
``run.json`` (provenance: dataset hash and statistics, device, precision, versions) and what the
:class:`~lmmrec.training.trainer.Trainer` writes (checkpoints, ``metrics.json``, ``log.txt``).
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

import lmmrec
from lmmrec.cache import DerivedCache
from lmmrec.data.dataset import Dataset
from lmmrec.data.loading import load_dataset
from lmmrec.encoders.saved import load_encoder
from lmmrec.errors import ConfigError, FeatureError
from lmmrec.evaluation.pools import PoolResult
from lmmrec.io import read_json, write_json
from lmmrec.models import registry
from lmmrec.models.base import ItemFeatures, ModelInputs, Recommender
from lmmrec.paths import lmmrec_home
from lmmrec.runtime import Runtime, seed_everything
from lmmrec.training.config import RunConfig, build_run_config, run_identity
from lmmrec.training.end2end import EndToEnd, ItemEncoding, encoder_inputs
from lmmrec.training.sources import StepModule, StoredFeatures
from lmmrec.training.trainer import (
    BEST,
    CHECKPOINT,
    METRICS,
    EpochCallback,
    FitResult,
    Trainer,
    load_best,
)

CONFIG = "config.json"
PROVENANCE = "run.json"
POOLS = "pools.json"  # evaluate_run_pools(cached=True)
POOLS_VERSION = 2  # what a pools.json holds: 2 added the mapped placement; older ones are redone


@dataclass
class RunResult:
    """A finished run: where it lives, its resolved config and its fit result."""

    run_dir: Path
    config: RunConfig
    fit: FitResult


def select_features(dataset: Dataset, config: RunConfig) -> ItemFeatures:
    """The stored item feature tensors of a frozen or fine-tuned run (empty for models without
    content)."""
    needs = registry.get(config.model).needs_features
    if config.features is None:
        if needs:
            known = ", ".join(sorted(dataset.features)) or "none"
            raise FeatureError(
                f"model {config.model!r} needs item features: set features=NAME "
                f"(dataset {dataset.name!r} has: {known}), or train end-to-end "
                "(paradigm=end2end encoder.spec=SPEC)"
            )
        return {}
    return dataset.feature_set(config.features).to_tensors()


def dataset_cache(dataset: Dataset) -> DerivedCache:
    """The derived-structure cache of ``dataset``: ``<dataset folder>/cache``, or
    ``$LMMREC_HOME/cache`` for datasets read from files that are not lmmrec folders."""
    root = dataset.root / "cache" if dataset.root is not None else lmmrec_home() / "cache"
    return DerivedCache(root)


def build_model(dataset: Dataset, config: RunConfig, item_feats: ItemFeatures) -> Recommender:
    """Seed, then instantiate the configured model for ``dataset``."""
    seed_everything(config.train.seed)
    inputs = ModelInputs(
        n_users=dataset.n_users,
        n_items=dataset.n_items,
        train=dataset.train,
        item_feats=item_feats,
        train_hash=dataset.content_hash(),
        cache=dataset_cache(dataset),
    )
    return registry.build(config.model, _model_params(config), inputs)


def _model_params(config: RunConfig) -> dict[str, Any]:
    """The model's hyper-parameters; end-to-end, per-item residual feature tables default to
    off (``train_features=false``): the encoder adapts every item's vectors itself, and a free
    residual per item would learn around it (``docs/paradigms.md``)."""
    params = dict(config.model_params)
    fields = registry.get(config.model).config_class.model_fields
    if config.paradigm == "end2end" and "train_features" in fields:
        params.setdefault("train_features", False)
    return params


def build_step(dataset: Dataset, config: RunConfig) -> StepModule:
    """The run's recommender with the source of its item features: stored tensors (frozen,
    fine-tuned) or the encoder with its feature bank (end-to-end)."""
    if config.paradigm != "end2end":
        item_feats = select_features(dataset, config)
        return StoredFeatures(build_model(dataset, config, item_feats), item_feats)
    section = config.encoder
    runtime = Runtime.resolve(config.train.device, config.train.precision)
    seed_everything(config.train.seed)
    encoder = load_encoder(section.spec, **section.options)  # a spec or a fine-tuned folder
    encoder.apply_strategy(section.strategy)
    modalities = section.modalities or [m for m in ("image", "text") if m in encoder.output_dims()]
    encoding = ItemEncoding(
        encoder,
        encoder_inputs(encoder, dataset, section.chunk_size, section.num_workers),
        modalities,
        section.chunk_size,
        section.activation_checkpointing,
    ).to(runtime.device)  # the catalogue is encoded where the run trains
    with runtime.autocast():
        encoding.cache_towers_if_frozen(dataset.features.values())
        initial = {m: t.cpu() for m, t in encoding.encode_all().items()}  # models build on CPU
    return EndToEnd(build_model(dataset, config, initial), encoding, section, initial)


def run_directory(config: RunConfig, dataset: Dataset) -> Path:
    return Path(config.output_dir) / (config.name or f"{dataset.name}-{config.model}")


def train(
    config: RunConfig,
    *,
    dataset: Dataset | None = None,
    resume: bool = True,
    callbacks: list[EpochCallback] | None = None,
) -> RunResult:
    """Train the model ``config`` describes and keep everything in its run directory.

    Args:
        config: the run; ``config.dataset`` is loaded unless ``dataset`` is given.
        resume: continue an interrupted run with the same configuration from its checkpoint;
            ``False`` starts over (the directory's checkpoints and metrics are replaced).
        callbacks: observers called after every epoch as ``callback(trainer, record)``.

    Raises:
        ConfigError: when the run directory holds a run with a different configuration.
    """
    dataset = load_dataset(config.dataset) if dataset is None else dataset
    step = build_step(dataset, config)
    resolved = config.model_copy(update={"model_params": step.recommender.config.model_dump()})
    run_dir = run_directory(resolved, dataset)
    previous = run_dir / CONFIG
    features_hash = _features_hash(dataset, resolved)  # hashed once: checked, then recorded
    if resume and previous.is_file():
        _check_same_run(run_dir, read_json(previous), resolved, dataset, features_hash)
    if not resume:
        for name in (CHECKPOINT, BEST, METRICS):
            (run_dir / name).unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(previous, resolved.model_dump(mode="json"))
    trainer = Trainer(step, dataset, resolved.train, run_dir, callbacks)
    write_json(run_dir / PROVENANCE, _provenance(dataset, trainer, features_hash))
    return RunResult(run_dir=run_dir, config=resolved, fit=trainer.fit(resume=resume))


def _check_same_run(
    run_dir: Path,
    stored: dict[str, Any],
    run: RunConfig,
    dataset: Dataset,
    features_hash: str | None,
) -> None:
    """Refuse to resume ``run_dir`` with another configuration or on other data.

    The data are compared by content (``run.json``'s hashes of the interactions and of the
    stored feature set), so a dataset folder that moved resumes its runs, and one changed in
    place (new interactions, or the feature set re-extracted under its name) does not; a run
    directory without that record must name the same dataset path.
    """
    config = run.model_dump(mode="json")
    recorded = read_json(run_dir / PROVENANCE) if (run_dir / PROVENANCE).is_file() else {}
    stored_hash = recorded.get("dataset_hash")
    fix = "pick another name=..., or start over with --no-resume"
    if stored_hash is not None and stored_hash != dataset.content_hash():
        raise ConfigError(
            f"{run_dir} holds a run on other data (dataset {config['dataset']} has changed "
            f"since it started); {fix}"
        )
    stored_features = recorded.get("features_hash")
    if stored_features is not None and stored_features != features_hash:
        raise ConfigError(
            f"{run_dir} holds a run on other features (feature set {run.features!r} of "
            f"{config['dataset']} has been re-extracted since it started); {fix}"
        )
    if stored_hash is not None:
        stored, config = {**stored, "dataset": None}, {**config, "dataset": None}
    if run_identity(stored) != run_identity(config):
        raise ConfigError(f"{run_dir} holds a run with a different configuration; {fix}")


def _features_hash(dataset: Dataset, run: RunConfig) -> str | None:
    """The content hash of the stored feature set the run reads (``None`` when it reads none)."""
    if run.features is None or run.paradigm == "end2end" or run.features not in dataset.features:
        return None
    return dataset.feature_set(run.features).content_hash()


def load_run(run_dir: Path) -> tuple[RunConfig, Dataset, Trainer]:
    """Rebuild a run's dataset and model (best weights loaded) and a trainer around them."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise ConfigError(f"{run_dir} is not a run directory: {CONFIG} is missing")
    config = build_run_config(read_json(run_dir / CONFIG), str(run_dir / CONFIG))
    dataset = load_dataset(config.dataset)
    step = load_best(build_step(dataset, config), run_dir)
    return config, dataset, Trainer(step, dataset, config.train, None)


def evaluate_run(
    run_dir: Path, splits: tuple[str, ...] = ("valid", "test")
) -> dict[str, dict[str, float]]:
    """Re-evaluate a run's best checkpoint; ``{split: {metric@K: value}}``."""
    _, _, trainer = load_run(run_dir)
    return {split: trainer.evaluate(split) for split in splits}


def evaluate_run_pools(
    run_dir: Path, splits: tuple[str, ...] = ("valid", "test"), *, cached: bool = False
) -> dict[str, list[PoolResult]]:
    """Item cold-start evaluation of a run's best checkpoint (:meth:`Trainer.evaluate_pools`).

    With ``cached=True`` the results are kept in the run directory's ``pools.json`` and reused
    while ``best.pt`` is unchanged (its size and modification time) and the file holds what
    this version of lmmrec evaluates (:data:`POOLS_VERSION`), so reports evaluate each run once.
    """
    run_dir = Path(run_dir)
    best = run_dir / BEST
    stamp = [best.stat().st_size, best.stat().st_mtime_ns] if best.is_file() else None
    stored: dict[str, Any] = {}
    if cached and (run_dir / POOLS).is_file():
        record = read_json(run_dir / POOLS)
        current = record.get("best") == stamp and record.get("version") == POOLS_VERSION
        stored = record.get("splits", {}) if current else {}
    missing = [split for split in splits if split not in stored]
    if missing:
        _, _, trainer = load_run(run_dir)
        for split, results in trainer.evaluate_pools_of(tuple(missing)).items():
            stored[split] = [asdict(result) for result in results]
        if cached:
            record = {"best": stamp, "version": POOLS_VERSION, "splits": stored}
            write_json(run_dir / POOLS, record)
    return {split: [PoolResult(**result) for result in stored[split]] for split in splits}


def _provenance(dataset: Dataset, trainer: Trainer, features_hash: str | None) -> dict[str, Any]:
    return {
        "lmmrec": lmmrec.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "dataset_hash": dataset.content_hash(),
        "features_hash": features_hash,
        "dataset": {k: v for k, v in dataset.statistics().items() if k != "feature_sets"},
        "device": str(trainer.runtime.device),
        "precision": trainer.runtime.precision,
        "world_size": trainer.runtime.world_size,
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
        "trainable_parameters": sum(
            p.numel() for p in trainer.step_module.parameters() if p.requires_grad
        ),
    }
