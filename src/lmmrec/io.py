"""Atomic writes, content hashes and YAML reading: nothing half-written is ever left under a final
name, and a file a user wrote by hand fails with one line naming where it is wrong."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lmmrec.errors import ConfigError

if TYPE_CHECKING:
    import yaml


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    Works for files and for directories (whatever the caller creates at the yielded path). On an
    exception the temporary is removed and ``path`` keeps its previous content.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    target = tmp / final.name
    try:
        yield target
        if final.is_dir() and not final.is_symlink():
            backup = tmp / ".old"
            os.replace(final, backup)
        os.replace(target, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    return json.loads(Path(path).read_text())


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """The YAML document in ``path`` (``None`` when it is empty), read with ``yaml.safe_load``.

    Raises:
        ConfigError: the file is missing or not UTF-8, or its YAML is malformed; the message is
            one line, ``FILE:LINE:COL: not valid YAML (problem); fix ...``, as compilers print.
    """
    import yaml  # here: every layer imports this module, few read YAML

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} does not exist or is not a file; check the path")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {error.start}); re-save it as UTF-8"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(yaml_error_line(path, error)) from None


def yaml_error_line(path: str | os.PathLike[str], error: yaml.YAMLError) -> str:
    """One line for a PyYAML error: where (line and column, 1-based), what, and a fix."""
    import yaml

    mark = getattr(error, "problem_mark", None)
    problem = " ".join(str(getattr(error, "problem", None) or error).split())
    if isinstance(error, yaml.reader.ReaderError):
        char = error.character
        code = char if isinstance(char, int) else ord(char)
        return (
            f"{path}: not valid YAML (character #x{code:04x} at position {error.position}: "
            f"{error.reason}); remove it, or re-save the file as UTF-8 text"
        )
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    context = getattr(error, "context", None)
    context_mark = getattr(error, "context_mark", None)
    if context and context_mark is not None:
        problem += f", {context} started at {context_mark.line + 1}:{context_mark.column + 1}"
    elif context:
        problem += f", {context}"
    return f"{where}: not valid YAML ({problem}); fix: {_yaml_fix(problem)}"


def _yaml_fix(problem: str) -> str:
    if "'\\t'" in problem:
        return "indent with spaces, never tabs"
    if "mapping values are not allowed" in problem:
        return "quote a value that holds ': ', and line up the keys of one mapping"
    if "quoted scalar" in problem:
        return "close the quote that was opened where the message says"
    if "flow sequence" in problem or "flow mapping" in problem:
        return "close the [ or { that was opened where the message says"
    if "alias" in problem or "anchor" in problem or "tag" in problem:
        return "quote a value that starts with '*', '&' or '!'"
    if "block" in problem or "indentation" in problem:
        return "line up the keys of one mapping and the '- ' items of one list"
    return "check the indentation and the quoting on that line"


def save_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Save one array as ``.npy``, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


def hash_arrays(*arrays: np.ndarray) -> str:
    """A short, stable content hash (sha256, 16 hex digits) of arrays' dtypes, shapes and bytes.

    The bytes are read in place (a C-contiguous array's buffer), not copied: hashing a 1 GB
    feature matrix does not take another 1 GB.
    """
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.data)
    return digest.hexdigest()[:16]


def hash_file(path: str | os.PathLike[str]) -> str:
    """A short content hash (sha256, 16 hex digits) of a file's bytes, read in 1 MB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
