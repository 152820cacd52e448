"""Model registry: names used by configs and the CLI -> recommender classes."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from lmmrec.errors import ConfigError, validation_problems
from lmmrec.models.base import ModelConfig, ModelInputs, Recommender

_MODELS: dict[str, type[Recommender]] = {}


def register(cls: type[Recommender]) -> type[Recommender]:
    """Class decorator adding ``cls`` under ``cls.name``; refuses duplicates and bad names."""
    name = getattr(cls, "name", None)
    if not name or name != name.lower() or not name.replace("_", "").isalnum():
        raise ValueError(f"{cls.__qualname__}.name must be a lower-case identifier, got {name!r}")
    if name in _MODELS and _MODELS[name] is not cls:
        raise ValueError(
            f"model name {name!r} is already registered by {_MODELS[name].__qualname__}"
        )
    if not issubclass(getattr(cls, "config_class", object), ModelConfig):
        raise ValueError(f"{cls.__qualname__}.config_class must subclass ModelConfig")
    _MODELS[name] = cls
    return cls


def names() -> list[str]:
    return sorted(_MODELS)


def get(name: str) -> type[Recommender]:
    """The class registered as ``name``; an unknown name lists the known ones."""
    try:
        return _MODELS[name.lower()]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(names())}") from None


def make_config(name: str, params: dict[str, Any]) -> ModelConfig:
    """Validate ``params`` against model ``name``'s config class (unknown keys are errors)."""
    cls = get(name)
    try:
        return cls.config_class(**params)
    except ValidationError as error:
        raise ConfigError(
            f"model {name!r}: {validation_problems(error, cls.config_class)}"
        ) from None


def build(name: str, params: dict[str, Any], inputs: ModelInputs) -> Recommender:
    """Instantiate model ``name`` with validated ``params`` for the given data."""
    return get(name)(make_config(name, params), inputs)
