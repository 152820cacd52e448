"""DerivedCache: plain tensors only, never unpickling what a shared dataset folder holds."""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import pytest
import scipy.sparse as sp
import torch

from lmmrec.cache import DerivedCache, check_plain
from lmmrec.models.base import ModelInputs
from lmmrec.models.knn import cached_knn
from lmmrec.models.user_graph import cached_co_occurrence_graph


class _Payload:
    """Unpickling this runs a shell command that writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def _cache_file(root: Path) -> Path:
    (path,) = root.glob("*.pt")
    return path


def test_values_round_trip_through_the_disk(tmp_path: Path) -> None:
    value = {"ids": torch.arange(5), "pair": (torch.ones(2, 3), 7), "name": "x", "none": None}
    first = DerivedCache(tmp_path).get_or_build("thing", {"a": 1}, ["h"], lambda: value)
    again = DerivedCache(tmp_path).get_or_build("thing", {"a": 1}, ["h"], pytest.fail)
    assert torch.equal(again["ids"], first["ids"]) and again["pair"][1] == 7
    assert again["name"] == "x" and again["none"] is None


def test_a_pickled_payload_is_refused_and_the_value_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "pwned"
    root = tmp_path / "cache"
    DerivedCache(root).get_or_build("thing", {}, ["h"], lambda: torch.zeros(3))
    path = _cache_file(root)
    with open(path, "wb") as handle:  # a tampered dataset folder: same name, code inside
        pickle.dump(_Payload(marker), handle)
    torch.save({"x": _Payload(marker)}, tmp_path / "torch-format.pt")
    with caplog.at_level(logging.WARNING, logger="lmmrec.cache"):
        value = DerivedCache(root).get_or_build("thing", {}, ["h"], lambda: torch.ones(3))
    assert not marker.exists()
    assert torch.equal(value, torch.ones(3))
    (record,) = caplog.records
    message = record.getMessage()
    assert str(path) in message and "refused" in message and "rebuilding" in message
    assert "\n" not in message
    assert torch.equal(DerivedCache(root).get_or_build("thing", {}, ["h"], pytest.fail), value)

    path.write_bytes((tmp_path / "torch-format.pt").read_bytes())  # the payload in torch's zip
    DerivedCache(root).get_or_build("thing", {}, ["h"], lambda: torch.ones(3))
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"not a torch file", b"PK\x03\x04truncated"])
def test_a_damaged_file_is_rebuilt_with_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    cache = DerivedCache(tmp_path)
    cache.get_or_build("thing", {}, ["h"], lambda: torch.zeros(2))
    _cache_file(tmp_path).write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="lmmrec.cache"):
        value = DerivedCache(tmp_path).get_or_build("thing", {}, ["h"], lambda: torch.ones(2))
    assert torch.equal(value, torch.ones(2))
    (record,) = caplog.records
    assert "\n" not in record.getMessage() and str(tmp_path) in record.getMessage()


def test_builders_must_return_plain_containers(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="csr_matrix"):
        DerivedCache(tmp_path).get_or_build("graph", {}, ["h"], lambda: sp.eye(3, format="csr"))
    with pytest.raises(TypeError, match="key of type int"):
        check_plain({1: torch.zeros(1)})
    assert list(tmp_path.iterdir()) == []


def test_a_plain_file_of_the_wrong_shape_is_rebuilt(tmp_path: Path) -> None:
    features = torch.randn(10, 4)
    good = cached_knn(DerivedCache(tmp_path), features, 3)
    path = _cache_file(tmp_path)
    torch.save((torch.zeros(2, 2, dtype=torch.int64), torch.zeros(2, 2)), path)
    rebuilt = cached_knn(DerivedCache(tmp_path), features, 3)
    assert torch.equal(rebuilt[0], good[0])


def test_the_user_graph_is_cached_as_tensors(tmp_path: Path) -> None:
    train = sp.random(30, 20, density=0.2, format="csr", random_state=0)
    train.data[:] = 1

    def graph() -> sp.csr_matrix:
        inputs = ModelInputs(30, 20, train=train, cache=DerivedCache(tmp_path))
        return cached_co_occurrence_graph(inputs, 4)

    first, second = graph(), graph()  # the second reads the file
    assert (first != second).nnz == 0 and second.has_sorted_indices
    _cache_file(tmp_path).write_bytes(b"junk")
    assert (graph() != first).nnz == 0
