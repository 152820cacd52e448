"""Content hashes: the bytes, dtype and shape of arrays, read in place."""

from __future__ import annotations

import hashlib

import numpy as np

from lmmrec.io import hash_arrays


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
