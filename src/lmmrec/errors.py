"""The exceptions a user can cause, in one small hierarchy.

Every message says what is wrong, where (a path, a key, a value) and how to fix it; the CLI prints
``str(error)`` on one line without a traceback.
"""

from __future__ import annotations


class LmmrecError(Exception):
    """Base class of every error lmmrec raises for bad input, bad configuration or bad state."""


class DataError(LmmrecError):
    """An interaction file, an item table, an id map or a split is malformed."""


class FeatureError(LmmrecError):
    """A feature set does not match its dataset (rows, NaN/inf, unknown name)."""


class ConfigError(LmmrecError):
    """A configuration key, value or override is unknown or invalid."""


class TrainingError(LmmrecError):
    """Training cannot go on (NaN loss, a run directory that cannot be resumed)."""
