"""One entry point for every dataset source: :func:`load_dataset` dispatches on what it is given."""

from __future__ import annotations

from pathlib import Path

from lmmrec.data.dataset import Dataset
from lmmrec.data.formats.attach import is_attached_mmrec, load_attached_mmrec
from lmmrec.data.formats.common import TABLE_SUFFIXES
from lmmrec.data.formats.mmrec import read_mmrec
from lmmrec.data.formats.table import read_table
from lmmrec.errors import DataError

EXPECTED = (
    "'demo', an lmmrec dataset folder (with dataset.json), an MMRec folder (with <name>.inter) "
    f"or an interaction table ({', '.join(TABLE_SUFFIXES)})"
)


def load_dataset(source: str | Path) -> Dataset:
    """Load a dataset from ``source``.

    * ``"demo"``: the built-in generated dataset (:func:`lmmrec.data.demo.load_demo`);
    * a folder with ``dataset.json``: :meth:`Dataset.load`; an MMRec folder given item content
      by :func:`~lmmrec.data.formats.attach.attach_items` has both, and is read by
      :func:`~lmmrec.data.formats.attach.load_attached_mmrec` (its ``.npy`` features included);
    * a folder with a ``*.inter`` file: :func:`~lmmrec.data.formats.mmrec.read_mmrec`;
    * a ``.csv`` / ``.tsv`` / ``.parquet`` file: :func:`~lmmrec.data.formats.table.read_table`
      with its defaults (columns ``user`` and ``item``, 5-core, random split).

    Raises:
        DataError: ``source`` is none of these, or the reader rejects it.
    """
    if str(source) == "demo":
        from lmmrec.data.demo import load_demo

        return load_demo()
    path = Path(source).expanduser()
    if path.is_dir():
        if (path / "dataset.json").is_file():
            if is_attached_mmrec(path):
                return load_attached_mmrec(path)
            return Dataset.load(path)
        if any(p.is_file() for p in path.glob("*.inter")):
            return read_mmrec(path)
        raise DataError(f"{path} holds neither dataset.json nor a .inter file; expected {EXPECTED}")
    if path.is_file():
        if path.suffix.lower() in TABLE_SUFFIXES:
            return read_table(path)
        raise DataError(
            f"{path}: unsupported file {path.suffix or '(no suffix)'!r}; expected {EXPECTED}"
        )
    raise DataError(f"{path} does not exist; expected {EXPECTED}")
