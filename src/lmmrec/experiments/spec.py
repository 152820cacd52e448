"""Experiment files: one YAML file declares a grid of runs; it is validated, then expanded.

An experiment crosses datasets x (encoder, paradigm) x models x hyper-parameter grid points x
seeds. Models without item content (BPR, LightGCN) are crossed with no encoder and no paradigm.
Every cell becomes a :class:`~lmmrec.training.config.RunConfig`, validated before anything runs.
The file's layout (``docs/experiments.md`` has the full reference)::

    name: demo
    variables: {data: ../shared/data/amazon}     # ${data} in any string value; --var overrides
    datasets: {shop: demo, baby: "${data}/baby"}  # label -> source (as `lmmrec train dataset=`)
    encoders:                                     # label -> where a cell's item vectors come from
      minilm-effnet: {features: minilm-effnet, extract: "pair:default"}
    paradigms: [frozen]                           # frozen | finetuned | end2end
    models:
      bpr: {grid: {train.lr: [1e-3, 5e-3]}}
      vbpr:
        params: {embedding_size: 64}              # fixed model hyper-parameters
        grid: {reg_weight: [0.1, 1e-3]}           # bare key: train setting if it names one, else
        datasets: {baby: {grid: {reg_weight: [1.0, 0.1]}}}   # model; per-dataset overrides
        end2end: {params: {embedding_size: 128}}  # per-paradigm overrides (frozen, finetuned ...)
    seeds: [2022, 2023, 2024]
    train: {epochs: 100, patience: 20}            # TrainConfig values shared by every run
    metrics: [recall@10, recall@20, ndcg@10, ndcg@20]
    select: recall@20                             # validation metric: epochs and grid points
    baseline: {model: bpr}                        # the cell improvements are measured against
    log: tensorboard                              # optional: every run's curves to TensorBoard,
                                                  # or mlflow (params, curves, test metrics)
    mlflow_uri: http://127.0.0.1:5000             # for log: mlflow (default: a local store)

Precedence of a run's settings, lowest first: model and TrainConfig defaults -> ``train`` ->
the model's ``train`` / ``params`` -> its paradigm section's -> its dataset section's -> the grid
point (grids replace per key in the same order). Unknown keys
anywhere are errors that name the file, the key, the known keys and the closest match.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lmmrec.errors import ConfigError, nested_model, unknown_name, validation_problems
from lmmrec.evaluation.metrics import parse_metric
from lmmrec.io import read_yaml

PARADIGMS = ("frozen", "finetuned", "end2end")
Paradigm = Literal["frozen", "finetuned", "end2end"]
DEFAULT_METRICS = ["recall@10", "recall@20", "ndcg@10", "ndcg@20"]
# grid keys: "train.lr" and "model.reg_weight" are explicit; a bare key follows `lmmrec train`
TRAIN_PREFIX, MODEL_PREFIX = "train.", "model."
_VARIABLE = re.compile(r"\$\{([^}]*)\}")
BUILTIN_FOLDER = "builtin"  # packaged experiment files (pyproject: package-data)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetOverride(_Section):
    """A model's settings on one dataset; each key replaces the model-wide key of the same name."""

    params: dict[str, Any] = Field(default_factory=dict, description="fixed model values")
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="values to try per key")
    train: dict[str, Any] = Field(default_factory=dict, description="TrainConfig values")

    @field_validator("grid", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return _grid_lists(value)


class ModelEntry(DatasetOverride):
    """One model of the experiment: fixed values, a grid, and where it runs."""

    encoders: list[str] | None = Field(None, description="encoder labels (default: all)")
    paradigms: list[Paradigm] | None = Field(None, description="paradigms (default: all)")
    datasets: dict[str, DatasetOverride] = Field(
        default_factory=dict, description="per-dataset overrides, by dataset label"
    )
    frozen: DatasetOverride | None = Field(None, description="overrides in frozen cells")
    finetuned: DatasetOverride | None = Field(None, description="overrides in fine-tuned cells")
    end2end: DatasetOverride | None = Field(None, description="overrides in end-to-end cells")


class EncoderEntry(_Section):
    """Where the item vectors of a cell come from, per paradigm.

    * ``frozen``: the stored feature set ``features`` (``extract``: the encoder spec that makes it
      when the dataset lacks it, e.g. ``pair:default``);
    * ``finetuned``: the stored feature set of the fine-tuned encoder, ``finetuned: {features:
      NAME}`` (made by ``lmmrec finetune`` then ``lmmrec encode``);
    * ``end2end``: ``encoder``, the run configuration's encoder section (spec, strategy, lr ...).

    ``frozen``/``finetuned``/``end2end`` may hold any further run-configuration keys for that
    paradigm. An encoder offers the paradigms it has what they need for.
    """

    features: str | None = None
    extract: str | None = None
    encoder: dict[str, Any] | None = None
    frozen: dict[str, Any] | None = None
    finetuned: dict[str, Any] | None = None
    end2end: dict[str, Any] | None = None

    def offers(self, paradigm: str) -> bool:
        if getattr(self, paradigm) is not None:
            return True
        if paradigm == "frozen":
            return self.features is not None
        return paradigm == "end2end" and self.encoder is not None

    def fragment(self, paradigm: str) -> dict[str, Any]:
        """The run-configuration keys this encoder sets in a ``paradigm`` cell."""
        base: dict[str, Any] = {}
        if paradigm == "frozen" and self.features:
            base["features"] = self.features
        if paradigm == "end2end" and self.encoder is not None:
            base["encoder"] = dict(self.encoder)
        return _deep_merge(base, getattr(self, paradigm) or {})


class Baseline(_Section):
    """The cell the others are compared with (``encoder``/``paradigm``: null for id-only models)."""

    model: str
    encoder: str | None = None
    paradigm: Paradigm | None = None


class ExperimentSpec(_Section):
    """A whole experiment file (see the module docstring)."""

    name: str | None = Field(None, description="default: the file's stem")
    description: str = ""
    variables: dict[str, str] = Field(default_factory=dict, description="${name} substitutions")
    output_dir: str | None = Field(None, description="default: runs/experiments/<name>")
    datasets: dict[str, str] = Field(description="label -> dataset source")
    encoders: dict[str, EncoderEntry] = Field(default_factory=dict)
    paradigms: list[Paradigm] = Field(default_factory=lambda: ["frozen"])
    models: dict[str, ModelEntry]
    seeds: list[int] = Field(default_factory=lambda: [2022])
    train: dict[str, Any] = Field(default_factory=dict, description="shared TrainConfig values")
    metrics: list[str] = Field(default_factory=lambda: list(DEFAULT_METRICS))
    select: str = Field("recall@20", description="validation metric that selects")
    baseline: Baseline | None = None
    threads: int | None = Field(None, gt=0, description="torch threads per run")
    log: Literal["tensorboard", "mlflow"] | None = Field(
        None,
        description="also log every run's curves: tensorboard (<run_dir>/tensorboard) or mlflow "
        "(parameters, curves, test metrics)",
    )
    mlflow_uri: str | None = Field(
        None, description="MLflow tracking URI (default: sqlite:///<output_dir>/mlflow.db)"
    )

    @field_validator("models", mode="before")
    @classmethod
    def _model_list(cls, value: Any) -> Any:
        if isinstance(value, list):  # `models: [bpr, lightgcn]` -> every model with defaults
            return {str(name): {} for name in value}
        if isinstance(value, dict):
            return {k: ({} if v is None else v) for k, v in value.items()}
        return value

    @field_validator("metrics", "select")
    @classmethod
    def _metric_names(cls, value: Any) -> Any:
        names = value if isinstance(value, list) else [value]
        for name in names:
            try:
                parse_metric(name)
            except ConfigError as error:
                raise ValueError(str(error)) from None
        return [n.lower() for n in value] if isinstance(value, list) else value.lower()

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, value: list[int]) -> list[int]:
        if not value or len(set(value)) != len(value):
            raise ValueError(f"seeds must be a non-empty list of distinct integers, got {value}")
        return value


@dataclass(frozen=True)
class Cell:
    """One run of the grid, before its inputs are hashed (see :mod:`lmmrec.experiments.runner`).

    ``config`` is the run configuration as a plain dict (no ``output_dir``/``name``); ``point``
    holds the grid values of this run, keyed as in the file.
    """

    dataset: str
    model: str
    encoder: str | None
    paradigm: str | None
    point: dict[str, Any]
    seed: int
    config: dict[str, Any] = field(repr=False)

    @property
    def group(self) -> tuple[str, str, str | None, str | None]:
        """The table row this run belongs to (the grid point and seed vary inside it)."""
        return (self.dataset, self.model, self.encoder, self.paradigm)

    @property
    def point_key(self) -> str:
        return json.dumps(self.point, sort_keys=True)

    def label(self) -> str:
        parts = [self.dataset, self.model]
        parts += [self.encoder] if self.encoder else []
        parts += [self.paradigm] if self.paradigm else []
        point = " ".join(f"{k}={v}" for k, v in self.point.items())
        return " ".join(
            [*parts, point, f"seed={self.seed}"] if point else [*parts, f"seed={self.seed}"]
        )


@dataclass
class Experiment:
    """A validated experiment: the spec, where it came from and its expanded cells."""

    spec: ExperimentSpec
    path: Path | None
    cells: list[Cell]

    @property
    def name(self) -> str:
        return self.spec.name or (self.path.stem if self.path else "experiment")

    @property
    def output_dir(self) -> Path:
        return Path(self.spec.output_dir or f"runs/experiments/{self.name}")

    @property
    def where(self) -> str:
        return str(self.path) if self.path else "experiment"


# ----------------------------------------------------------------------------- loading
def builtin_experiments() -> list[str]:
    """Names of the experiment files shipped with lmmrec (``lmmrec/experiments/builtin``):
    ``demo`` (what ``lmmrec demo`` runs) and ``defaults-demo`` (``lmmrec demo --zoo``).
    ``configs/`` in the repository holds identical copies (a test compares them)."""
    folder = Path(__file__).with_name(BUILTIN_FOLDER)
    return sorted(p.stem for p in folder.glob("*.yaml"))


def builtin_path(name: str) -> Path:
    """The packaged file of built-in experiment ``name``; a ``ConfigError`` names the known."""
    if name not in builtin_experiments():
        raise ConfigError(
            f"unknown built-in experiment {name!r}; known: {', '.join(builtin_experiments())}"
        )
    return Path(__file__).with_name(BUILTIN_FOLDER) / f"{name}.yaml"


def load_experiment(
    source: str | Path | dict[str, Any], variables: dict[str, str] | None = None
) -> Experiment:
    """Read, validate and expand an experiment file (or an already parsed mapping).

    Args:
        source: a YAML file, the name of a built-in experiment (:func:`builtin_experiments`;
            an existing file of that name wins), or a file's content as a mapping.
        variables: ``${name}`` values that replace the file's own ``variables``.

    Raises:
        ConfigError: unreadable YAML, unknown keys, models, encoders, paradigms or metrics, bad
            values, or a grid cell that is not a valid run configuration; the message names the
            file and the key.
    """
    path: Path | None = None
    if isinstance(source, dict):
        data, where = source, "experiment"
    else:
        path = Path(source)
        if not path.is_file() and str(source) in builtin_experiments():
            path = builtin_path(str(source))
        where = str(path)
        if not path.is_file():
            raise ConfigError(
                f"experiment file {path} does not exist (built-in experiments: "
                f"{', '.join(builtin_experiments())})"
            )
        data = read_yaml(path)
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping (datasets:, models: ...)")
    data = _substitute(data, {**dict(data.get("variables") or {}), **(variables or {})}, where)
    _check_keys(data, ExperimentSpec, where, ())
    try:
        spec = ExperimentSpec.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"{where}: {validation_problems(error)}") from None
    experiment = Experiment(spec=spec, path=path, cells=[])
    experiment.cells = expand(spec, where)
    return experiment


def _substitute(value: Any, variables: dict[str, str], where: str, key: str = "") -> Any:
    if isinstance(value, dict):
        return {
            k: v
            if k == "variables" and not key
            else _substitute(v, variables, where, _join(key, k))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_substitute(v, variables, where, f"{key}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        name = match.group(1).strip()
        if name not in variables:
            known = ", ".join(sorted(variables)) or "none"
            raise ConfigError(
                f"{where}: {key}: unknown variable ${{{name}}}; define it under variables: or "
                f"pass --var {name}=VALUE (defined: {known})"
            )
        return str(variables[name])

    return _VARIABLE.sub(replace, value)


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _check_keys(data: Any, model: type[BaseModel], where: str, loc: tuple[str, ...]) -> None:
    """Unknown keys in ``data`` against the fields of ``model``, recursively, with suggestions."""
    if not isinstance(data, dict):
        return
    known = list(model.model_fields)
    for key, value in data.items():
        if key not in model.model_fields:
            raise ConfigError(_unknown(where, ".".join((*loc, str(key))), str(key), known, "key"))
        annotation = model.model_fields[key].annotation
        nested, mapping = nested_model(annotation)
        if nested is None:
            continue
        if mapping and isinstance(value, dict):
            for name, item in value.items():
                _check_keys(item, nested, where, (*loc, str(key), str(name)))
        elif not mapping:
            _check_keys(value, nested, where, (*loc, str(key)))


def _unknown(where: str, loc: str, name: str, known: list[str], what: str) -> str:
    return f"{where}: {loc}: {unknown_name(name, known, what)}"


def _grid_lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: v if isinstance(v, list) else [v] for k, v in value.items()}
    return value


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# ----------------------------------------------------------------------------- expansion
def expand(spec: ExperimentSpec, where: str = "experiment") -> list[Cell]:
    """Every run of ``spec`` as a validated :class:`Cell`, in file order (datasets outermost).

    Raises:
        ConfigError: an unknown model, encoder, paradigm or key, or a cell whose run
            configuration does not validate; the message names the file and the key.
    """
    from lmmrec.models import registry

    _check_references(spec, where)
    train_keys = _train_keys()
    shared_train = _train_section(spec.train, where, "train", train_keys)
    if "valid_metric" in shared_train and shared_train["valid_metric"] != spec.select:
        raise ConfigError(
            f"{where}: train.valid_metric ({shared_train['valid_metric']}) differs from select "
            f"({spec.select}); set only select: it chooses epochs and grid points alike"
        )
    ks = sorted({parse_metric(m)[1] for m in [*spec.metrics, spec.select]})
    cells: list[Cell] = []
    for dataset, source in spec.datasets.items():
        for model, entry in spec.models.items():
            loc = f"models.{model}"
            model_keys = list(registry.get(model).config_class.model_fields)
            for encoder, paradigm in _content_cells(spec, model, entry, where):
                # precedence: model < its paradigm section < its dataset section
                layers = [(loc, entry)]
                section = getattr(entry, paradigm) if paradigm else None
                if section is not None:
                    layers.append((f"{loc}.{paradigm}", section))
                if dataset in entry.datasets:
                    layers.append((f"{loc}.datasets.{dataset}", entry.datasets[dataset]))
                params: dict[str, Any] = {}
                grid: dict[str, list[Any]] = {}
                train = dict(shared_train)
                for where_in, layer in layers:
                    for key in layer.params:
                        if key not in model_keys:
                            raise ConfigError(
                                _unknown(where, f"{where_in}.params", key, model_keys, "parameter")
                            )
                    for key in layer.grid:
                        _grid_target(key, model_keys, train_keys, where, f"{where_in}.grid")
                    params.update(layer.params)
                    grid.update(layer.grid)
                    train.update(
                        _train_section(layer.train, where, f"{where_in}.train", train_keys)
                    )
                for values in itertools.product(*grid.values()):
                    point = dict(zip(grid, values, strict=True))
                    for seed in spec.seeds:
                        config = _cell_config(
                            spec,
                            source,
                            model,
                            params,
                            train,
                            point,
                            seed,
                            encoder,
                            paradigm,
                            ks,
                            model_keys,
                            train_keys,
                            where,
                        )
                        cell = Cell(dataset, model, encoder, paradigm, point, seed, config)
                        _validate_cell(cell, where)
                        cells.append(cell)
    if not cells:
        raise ConfigError(f"{where}: the grid is empty (no dataset, model or paradigm left)")
    return cells


def _check_references(spec: ExperimentSpec, where: str) -> None:
    from lmmrec.models import registry

    if not spec.datasets:
        raise ConfigError(f"{where}: datasets: declare at least one (label: source)")
    if not spec.models:
        raise ConfigError(f"{where}: models: declare at least one model")
    known_models = registry.names()
    for model, entry in spec.models.items():
        if model not in known_models:
            raise ConfigError(_unknown(where, "models", model, known_models, "model"))
        for dataset in entry.datasets:
            if dataset not in spec.datasets:
                raise ConfigError(
                    _unknown(
                        where, f"models.{model}.datasets", dataset, list(spec.datasets), "dataset"
                    )
                )
        for encoder in entry.encoders or []:
            if encoder not in spec.encoders:
                raise ConfigError(
                    _unknown(
                        where, f"models.{model}.encoders", encoder, list(spec.encoders), "encoder"
                    )
                )
    for label, encoder in spec.encoders.items():
        specs = [encoder.extract] if encoder.extract else []
        if encoder.encoder and isinstance(encoder.encoder.get("spec"), str):
            specs.append(encoder.encoder["spec"])
        for text in specs:
            _check_encoder_spec(text, where, f"encoders.{label}")
        if encoder.extract and not encoder.features:
            raise ConfigError(
                f"{where}: encoders.{label}: extract needs features: NAME (the feature set to make)"
            )
    if spec.baseline is not None:
        b = spec.baseline
        if b.model not in spec.models:
            raise ConfigError(
                _unknown(where, "baseline.model", b.model, list(spec.models), "model")
            )
        if b.encoder is not None and b.encoder not in spec.encoders:
            raise ConfigError(
                _unknown(where, "baseline.encoder", b.encoder, list(spec.encoders), "encoder")
            )


def _check_encoder_spec(text: str, where: str, loc: str) -> None:
    """The encoder's name must be known; its weights are only read when a run needs them."""
    from lmmrec.encoders import registry as encoders

    try:
        name, _ = encoders.parse_spec(text)
    except ConfigError as error:
        raise ConfigError(f"{where}: {loc}: {error}") from None
    if name.lower() not in encoders.names():
        raise ConfigError(_unknown(where, loc, name, encoders.names(), "encoder"))


def _content_cells(
    spec: ExperimentSpec, model: str, entry: ModelEntry, where: str
) -> list[tuple[str | None, str | None]]:
    """The (encoder, paradigm) pairs a model runs in. An ID-only model runs without features,
    ``[(None, None)]``, unless its entry names ``encoders:``: then it trains beside their stored
    features (frozen, fine-tuned), which it ignores, so that its runs can place new items by a
    map from those features (:meth:`lmmrec.training.Trainer.content_map`)."""
    from lmmrec.models import registry

    id_only = not registry.get(model).needs_features
    if id_only and entry.encoders is None:
        return [(None, None)]
    if not spec.encoders:
        raise ConfigError(
            f"{where}: models.{model} needs item features but encoders: declares none "
            "(e.g. encoders: {mine: {features: FEATURE_SET_NAME}})"
        )
    paradigms = [p for p in spec.paradigms if entry.paradigms is None or p in entry.paradigms]
    if id_only:  # the encoder would get no gradient end to end
        paradigms = [p for p in paradigms if p != "end2end"]
    pairs = [
        (label, paradigm)
        for label in (entry.encoders or list(spec.encoders))
        for paradigm in paradigms
        if spec.encoders[label].offers(paradigm)
    ]
    if not pairs:
        raise ConfigError(
            f"{where}: models.{model}: no encoder offers any of the paradigms {paradigms} "
            "(frozen needs features:, finetuned a finetuned: {features: NAME} section, "
            "end2end an encoder: section)"
        )
    return pairs


def _train_keys() -> list[str]:
    from lmmrec.training.config import TrainConfig

    return list(TrainConfig.model_fields)


def _train_section(
    values: dict[str, Any], where: str, loc: str, known: list[str]
) -> dict[str, Any]:
    for key in values:
        if key not in known:
            raise ConfigError(_unknown(where, loc, key, known, "training setting"))
    if "seed" in values:
        raise ConfigError(f"{where}: {loc}.seed: set seeds: [..] at the top level instead")
    return dict(values)


def _grid_target(
    key: str, model_keys: list[str], train_keys: list[str], where: str, loc: str
) -> tuple[str, str]:
    """``("train" | "model", name)`` for a grid key (bare keys as `lmmrec train` reads them)."""
    if key.startswith(TRAIN_PREFIX):
        name, section, known = key[len(TRAIN_PREFIX) :], "train", train_keys
    elif key.startswith(MODEL_PREFIX):
        name, section, known = key[len(MODEL_PREFIX) :], "model", model_keys
    elif key in train_keys:
        name, section, known = key, "train", train_keys
    else:
        name, section, known = key, "model", model_keys
    if section == "train" and name == "seed":
        raise ConfigError(f"{where}: {loc}.{key}: seeds are set by seeds: [..], not by the grid")
    if name not in known:
        known_all = model_keys + [TRAIN_PREFIX + k for k in train_keys]
        raise ConfigError(_unknown(where, loc, key, known_all, "grid key"))
    return section, name


def _cell_config(
    spec: ExperimentSpec,
    source: str,
    model: str,
    params: dict[str, Any],
    train: dict[str, Any],
    point: dict[str, Any],
    seed: int,
    encoder: str | None,
    paradigm: str | None,
    ks: list[int],
    model_keys: list[str],
    train_keys: list[str],
    where: str,
) -> dict[str, Any]:
    from lmmrec.training.config import RunConfig

    model_params, train = dict(params), dict(train)
    for key, value in point.items():
        section, name = _grid_target(key, model_keys, train_keys, where, "grid")
        (train if section == "train" else model_params)[name] = value
    train["seed"] = seed
    train["valid_metric"] = spec.select
    train["ks"] = sorted({*train.get("ks", []), *ks})
    config: dict[str, Any] = {
        "dataset": source,
        "model": model,
        "model_params": model_params,
        "train": train,
    }
    if encoder is not None and paradigm is not None:
        config = _deep_merge(config, spec.encoders[encoder].fragment(paradigm))
        if "paradigm" in RunConfig.model_fields or paradigm != "frozen":
            config["paradigm"] = paradigm
    return config


def _validate_cell(cell: Cell, where: str) -> None:
    from lmmrec.models import registry
    from lmmrec.training.config import RunConfig

    try:
        RunConfig.model_validate(cell.config)
    except ValidationError as error:
        raise ConfigError(
            f"{where}: cell [{cell.label()}]: {validation_problems(error, RunConfig)}"
        ) from None
    try:
        registry.make_config(cell.model, cell.config["model_params"])
    except ConfigError as error:
        raise ConfigError(f"{where}: cell [{cell.label()}]: {error}") from None
