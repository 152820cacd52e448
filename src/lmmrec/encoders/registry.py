"""Encoder registry: spec strings (``"clip:/models/clip-b16"``) -> built :class:`ItemEncoder` s.

A spec is ``name`` or ``name:arg``; what ``arg`` means is the encoder's business (a folder, a hub
id, ``default``, or for ``pair``/``dual`` two specs joined by ``+``). Built-in encoders live in
modules imported on first use (the transformers "auto" pattern), so importing lmmrec stays fast and
an encoder whose module is absent (or whose dependencies are missing) fails only when asked for.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from lmmrec.encoders.base import ItemEncoder
from lmmrec.errors import ConfigError

_ENCODERS: dict[str, type[ItemEncoder]] = {}
# name -> module whose import registers it
_BUILTIN = {
    "sbert": "lmmrec.encoders.sbert",
    "cnn": "lmmrec.encoders.cnn",
    "clip": "lmmrec.encoders.clip",
    "pair": "lmmrec.encoders.dual",
    "dual": "lmmrec.encoders.dual",
    "vlmo": "lmmrec.encoders.vlmo",
}


def register(cls: type[ItemEncoder]) -> type[ItemEncoder]:
    """Class decorator adding ``cls`` under ``cls.name``; refuses duplicates and bad names."""
    name = getattr(cls, "name", None)
    if not name or name != name.lower() or not name.replace("_", "").isalnum():
        raise ValueError(f"{cls.__qualname__}.name must be a lower-case identifier, got {name!r}")
    if not issubclass(cls, ItemEncoder):
        raise ValueError(f"{cls.__qualname__} must subclass ItemEncoder")
    if name in _ENCODERS and _ENCODERS[name] is not cls:
        raise ValueError(
            f"encoder name {name!r} is already registered by {_ENCODERS[name].__qualname__}"
        )
    _ENCODERS[name] = cls
    return cls


def names() -> list[str]:
    """Registered and built-in encoder names."""
    return sorted(set(_ENCODERS) | set(_BUILTIN))


def get(name: str) -> type[ItemEncoder]:
    """The class registered as ``name``; an unknown name lists the known ones."""
    name = name.lower()
    if name not in _ENCODERS and name in _BUILTIN:
        try:
            importlib.import_module(_BUILTIN[name])
        except ImportError as error:
            raise ConfigError(
                f"encoder {name!r} cannot be loaded ({error}); install lmmrec[encoders]"
            ) from error
    if name in _BUILTIN and name not in _ENCODERS:
        raise ConfigError(f"encoder {name!r} is not available: {_BUILTIN[name]} registers none")
    if name not in _ENCODERS:
        raise ConfigError(f"unknown encoder {name!r}; known encoders: {', '.join(names())}")
    return _ENCODERS[name]


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``"name:arg"`` -> ``("name", "arg")``; ``"name"`` -> ``("name", None)``."""
    name, sep, arg = spec.strip().partition(":")
    if not name or (sep and not arg):
        raise ConfigError(
            f"bad encoder spec {spec!r}; write NAME or NAME:ARG, e.g. sbert:default, "
            "clip:/path/to/clip-folder, dual:default"
        )
    return name, arg if sep else None


def build(spec: str, **options: Any) -> ItemEncoder:
    """Build the encoder ``spec`` names, in eval mode; ``options`` go to its ``from_spec``.

    Raises:
        ConfigError: unknown name, bad spec or unknown option (the message lists the valid ones).
    """
    name, arg = parse_spec(spec)
    cls = get(name)
    accepted = inspect.signature(cls.from_spec).parameters
    unknown = sorted(set(options) - set(accepted) - {"arg"})
    if unknown:
        valid = ", ".join(p for p in accepted if p != "arg") or "none"
        raise ConfigError(f"encoder {name!r}: unknown options {unknown}; valid options: {valid}")
    encoder = cls.from_spec(arg, **options)
    encoder.spec = spec.strip()
    encoder.build_options = dict(options)
    return encoder.eval()
