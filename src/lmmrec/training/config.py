"""Typed run configuration: YAML files plus ``key=value`` command-line overrides.

Precedence, lowest first: the defaults written here and in each model's config class -> a YAML
file (``--config``) -> command-line overrides. Unknown keys are errors at every layer.

Override keys: ``train.lr=0.01``, ``model.n_layers=2`` and ``encoder.strategy=lora:8`` address a
section explicitly; a bare key (``lr=0.01``, ``n_layers=2``) goes to the run settings if it names
one, then to the training settings, and otherwise to the model's hyper-parameters (which the
model's config validates). Encoder settings are always dotted, so a bare ``lr`` stays the
recommender's.
Values are parsed as YAML scalars (``1e-3`` -> float, ``true`` -> bool, ``[5,10]`` -> list).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from lmmrec.errors import ConfigError, unknown_name, validation_problems
from lmmrec.evaluation.metrics import parse_metric
from lmmrec.runtime import DeviceChoice, PrecisionChoice

#: Training settings added after runs were first recorded, with the value that reproduces those
#: runs. At that value a setting is left out of a run's identity (:func:`run_identity`), so runs
#: recorded before it existed keep their names and resume; any other value is part of it.
NEUTRAL_TRAIN_DEFAULTS: dict[str, Any] = {"negatives": "all"}


def run_identity(config: dict[str, Any]) -> dict[str, Any]:
    """A run configuration (as JSON) as runs are told apart: the experiment runner's run names
    hash it and resuming compares it; training settings at their neutral defaults are left out
    (:data:`NEUTRAL_TRAIN_DEFAULTS`)."""
    train = config.get("train")
    if not isinstance(train, dict):
        return config
    neutral = NEUTRAL_TRAIN_DEFAULTS
    kept = {k: v for k, v in train.items() if k not in neutral or neutral[k] != v}
    return {**config, "train": kept}


class TrainConfig(BaseModel):
    """How a model is trained and selected (defaults: MMRec ``overall.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(1000, gt=0, description="maximum training epochs")
    batch_size: int = Field(2048, gt=0, description="training triples per step")
    lr: float = Field(
        1e-3, gt=0, description="Adam learning rate (unset: the model's default_lr, else 1e-3)"
    )
    weight_decay: float = Field(0.0, ge=0, description="Adam L2 weight decay")
    lr_decay: float = Field(
        1.0, gt=0, description="learning rate factor per lr_decay_step epochs (lr * f**(e/step))"
    )
    lr_decay_step: int = Field(50, gt=0, description="epochs over which lr_decay applies once")
    patience: int = Field(
        20,
        gt=0,
        description="stop at the first evaluation this many epochs after the best valid metric",
    )
    valid_metric: str = Field("recall@20", description="model-selection metric on validation")
    eval_every: int = Field(
        1, gt=0, description="evaluate on validation every N epochs (patience counts epochs)"
    )
    ks: list[int] = Field([5, 10, 20, 50], description="cut-offs K of the reported metrics")
    eval_batch_size: int = Field(
        2048, gt=0, description="users per scoring block ([block, I] float32 scores in memory)"
    )
    mask_valid_at_test: bool = Field(
        False, description="also mask validation items when ranking for test (MMRec: no)"
    )
    checkpoint_every_epochs: int = Field(
        0, ge=0, description="write checkpoint.pt every N epochs (0: by time only)"
    )
    checkpoint_every_seconds: float = Field(
        60.0, ge=0, description="write checkpoint.pt once this many seconds have passed (0: off)"
    )
    negatives: Literal["all", "trained"] = Field(
        "all",
        description="items negatives are drawn from: all (MMRec), or trained, those with "
        "training interactions (items only in valid/test, e.g. new ones, are never negatives)",
    )
    seed: int = Field(2022, description="seeds initialisation, shuffling and negatives")
    device: DeviceChoice = Field("auto", description="auto (CUDA when present), cpu or cuda")
    precision: PrecisionChoice = Field("auto", description="auto (bf16 on CUDA), fp32 or bf16")

    @field_validator("valid_metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        parse_metric(value)
        return value.lower()

    @field_validator("ks")
    @classmethod
    def _positive_ks(cls, value: list[int]) -> list[int]:
        if not value or min(value) <= 0:
            raise ValueError(f"ks must be positive integers, got {value}")
        return sorted(set(value))

    def model_post_init(self, context: Any) -> None:
        _, k = parse_metric(self.valid_metric)
        if k not in self.ks:
            self.ks = sorted({*self.ks, k})


Paradigm = Literal["frozen", "finetuned", "end2end"]


class EncoderConfig(BaseModel):
    """The item encoder of an end-to-end run (``paradigm: end2end``; ``docs/paradigms.md``).

    The recommendation loss back-propagates into the parameters ``strategy`` makes trainable;
    they train in their own optimiser group at ``lr`` / ``weight_decay``, after an optional
    linear warm-up of ``warmup_epochs``.
    """

    model_config = ConfigDict(extra="forbid")

    spec: str = Field(
        ..., description="encoder spec (dual:default, clip:/models/clip) or a saved encoder folder"
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="build options of the encoder (dual: dim, seed)"
    )
    strategy: str = Field(
        "projection", description="trainable parameters: projection, top:N, lora:R or full"
    )
    modalities: list[str] | None = Field(
        None, description="encoder outputs fed to the recommender (default: image and text)"
    )
    lr: float = Field(1e-4, ge=0, description="learning rate of the encoder's parameters")
    weight_decay: float = Field(0.0, ge=0, description="L2 weight decay of the encoder")
    warmup_epochs: int = Field(0, ge=0, description="linear warm-up of the encoder's lr")
    chunk_size: int = Field(
        256, gt=0, description="items per encoder forward; bounds the peak memory of a step"
    )
    refresh: str = Field(
        "epoch",
        description="when the feature bank re-encodes every item: epoch, step (the authors' "
        "design: after every step), never, or a number N (every N steps)",
    )
    align_weight: float = Field(
        0.0, ge=0, description="weight of an image-text contrastive loss on the batch's items"
    )
    dropout: bool = Field(
        False, description="run the encoder in training mode (dropout, batch-norm statistics)"
    )
    activation_checkpointing: bool = Field(
        False, description="recompute encoder activations in the backward pass (less memory)"
    )
    num_workers: int = Field(0, ge=0, description="DataLoader workers preprocessing the catalogue")

    @field_validator("refresh")
    @classmethod
    def _known_refresh(cls, value: str) -> str:
        value = str(value).strip().lower()
        if value in ("epoch", "step", "never") or (value.isdigit() and int(value) > 0):
            return value
        raise ValueError(f"refresh must be epoch, step, never or a positive number, got {value!r}")


class RunConfig(BaseModel):
    """One training run: which data, which model with which hyper-parameters, how to train."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field("demo", description="'demo', a dataset folder, an MMRec folder or a table")
    model: str = Field("bpr", description="registered model name (`lmmrec models`)")
    model_params: dict[str, Any] = Field(default_factory=dict, description="model hyper-parameters")
    paradigm: Paradigm = Field(
        "frozen",
        description="frozen or finetuned (stored features=NAME) or end2end (encoder section)",
    )
    features: str | None = Field(None, description="feature set name (multi-modal models)")
    encoder: EncoderConfig | None = Field(None, description="the encoder of an end2end run")
    train: TrainConfig = Field(default_factory=TrainConfig)
    output_dir: str = Field("runs", description="parent folder of run directories")
    name: str | None = Field(None, description="run directory name (default: <dataset>-<model>)")

    @model_validator(mode="after")
    def _model_learning_rate(self) -> RunConfig:
        """A run that sets no learning rate trains at its model's ``default_lr`` (if any)."""
        from lmmrec.models import registry

        if "lr" in self.train.model_fields_set or self.model.lower() not in registry.names():
            return self  # an unknown model is reported where the model is built
        lr = registry.get(self.model).default_lr
        if lr is not None:  # a copy: the caller's TrainConfig may serve other runs
            self.train = self.train.model_copy(update={"lr": lr})
        return self

    @model_validator(mode="after")
    def _paradigm_sections(self) -> RunConfig:
        if self.paradigm == "end2end" and self.encoder is None:
            raise ValueError("paradigm end2end needs an encoder section (encoder.spec=SPEC)")
        if self.paradigm != "end2end" and self.encoder is not None:
            raise ValueError(
                f"the encoder section is used by paradigm end2end only (this run: {self.paradigm}"
                "); for fine-tuned features run `lmmrec finetune`, `lmmrec encode`, then "
                "features=NAME"
            )
        if self.paradigm == "end2end" and self.features is not None:
            raise ValueError("paradigm end2end encodes its own features: leave features unset")
        return self


def _parse_override(text: str) -> tuple[list[str], Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} must look like key=value (e.g. train.lr=0.01)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string; numbers win here
        with contextlib.suppress(ValueError):
            value = float(value)
    return key.strip().split("."), value


# dotted override prefix -> section of the raw run configuration
SECTIONS = {"train": "train", "model": "model_params", "encoder": "encoder"}


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of the raw config ``data`` with ``key=value`` overrides applied."""
    data = {
        **data,
        "train": dict(data.get("train") or {}),
        "model_params": dict(data.get("model_params") or {}),
    }
    if data.get("encoder") is not None or any(o.startswith("encoder.") for o in overrides):
        data["encoder"] = dict(data.get("encoder") or {})
    run_keys = set(RunConfig.model_fields) - {"train", "model_params", "encoder"}
    train_keys = set(TrainConfig.model_fields)
    bare_model_keys: list[str] = []
    for text in overrides:
        path, value = _parse_override(text)
        if len(path) == 1:
            key = path[0]
            if key in run_keys:
                data[key] = value
            elif key in train_keys:
                data["train"][key] = value
            else:
                data["model_params"][key] = value
                bare_model_keys.append(key)
        elif len(path) == 2 and path[0] in SECTIONS:
            data[SECTIONS[path[0]]][path[1]] = value
        else:
            raise ConfigError(
                f"override key {'.'.join(path)!r} is not understood; "
                "use KEY, train.KEY, model.KEY or encoder.KEY"
            )
    _check_bare_keys(bare_model_keys, data.get("model"), sorted(run_keys | train_keys))
    return data


def _check_bare_keys(keys: list[str], model: Any, settings: list[str]) -> None:
    """A bare ``KEY=VALUE`` that is neither a run or training setting nor a hyper-parameter of
    ``model`` is refused with all three sets of names (the model's own check would list only
    its hyper-parameters, though the key may be a mistyped setting such as ``learning_rate``)."""
    from lmmrec.models import registry

    if not keys or not isinstance(model, str) or model.lower() not in registry.names():
        return  # no model yet, or an unknown one: RunConfig's validation reports it
    hyper = list(registry.get(model).config_class.model_fields)
    for key in keys:
        if key not in hyper:
            raise ConfigError(
                f"override {key}=...: {unknown_name(key, [*settings, *hyper], 'setting')} "
                f"(a bare KEY is a run or training setting, or a hyper-parameter of {model})"
            )


def build_run_config(data: dict[str, Any], where: str) -> RunConfig:
    """Validate raw ``data`` (unknown keys and bad values are :class:`ConfigError`)."""
    try:
        return RunConfig(**data)
    except ValidationError as error:
        raise ConfigError(f"{where}: {validation_problems(error, RunConfig)}") from None


def load_run_config(path: Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Defaults, then the YAML file at ``path`` (if any), then ``overrides``."""
    data: dict[str, Any] = {}
    where = "command-line overrides"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        from lmmrec.io import read_yaml  # one-line FILE:LINE:COL errors for malformed YAML

        data = read_yaml(path) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
        where = str(path)
    return build_run_config(apply_overrides(data, overrides or []), where)
