"""Content hashes (the bytes, dtype and shape of arrays, read in place) and YAML reading."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from lmmrec.errors import ConfigError
from lmmrec.io import hash_arrays, read_yaml


def test_hash_is_sha256_of_dtype_shape_and_bytes() -> None:
    view = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]  # not contiguous
    expected = hashlib.sha256(b"<f4(3, 2)" + np.ascontiguousarray(view).tobytes())
    assert hash_arrays(view) == expected.hexdigest()[:16]


def test_hash_tells_dtype_shape_and_values_apart() -> None:
    a = np.zeros((2, 3), dtype=np.float32)
    hashes = {
        hash_arrays(a),
        hash_arrays(a.astype(np.float64)),
        hash_arrays(a.reshape(3, 2)),
        hash_arrays(np.eye(2, 3, dtype=np.float32)),
        hash_arrays(a, a),
    }
    assert len(hashes) == 5
    assert hash_arrays(a.copy()) == hash_arrays(a)


@pytest.mark.parametrize(
    ("text", "where", "problem", "fix"),
    [
        ("a: 1\n b: 2\n", ":2:3:", "mapping values are not allowed here", "quote a value"),
        ("a: [1, 2\nb: 3\n", ":2:2:", "flow sequence started at 1:4", "close the [ or {"),
        ("a:\n  - 1\n - 2\n", ":3:2:", "block mapping started at 1:1", "line up the keys"),
        ("k: 'open\n", ":2:1:", "quoted scalar started at 1:4", "close the quote"),
        ("a: 1\n\tb: 2\n", ":2:1:", "found character '\\t'", "spaces, never tabs"),
        ("a: *x\n", ":1:4:", "undefined alias 'x'", "quote a value that starts with"),
        ("a: \x00\n", ":", "character #x0000 at position 3", "re-save the file"),
    ],
)
def test_read_yaml_errors_are_one_line_with_place_problem_and_fix(
    tmp_path: Path, text: str, where: str, problem: str, fix: str
) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        read_yaml(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}{where}")
    assert "not valid YAML" in message and problem in message and fix in message


def test_read_yaml_reads_documents_and_names_missing_or_binary_files(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("model: bpr\ntrain: {lr: 0.01}\n")
    assert read_yaml(path) == {"model": "bpr", "train": {"lr": 0.01}}
    path.write_text("")
    assert read_yaml(path) is None
    path.write_text("x: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="could not determine a constructor"):
        read_yaml(path)  # safe_load: tags never build Python objects
    path.write_bytes(b"a: \xff\n")
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 3\); re-save it as UTF-8"):
        read_yaml(path)
    with pytest.raises(ConfigError, match="does not exist"):
        read_yaml(tmp_path / "nowhere.yaml")
