"""What a user sees when a file is wrong: one line on stderr, never a traceback (issue 14).

These run the real entry point (``python -m lmmrec``) in a subprocess, since ``main()`` is what
turns errors and warnings into single lines.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np

HEADER = "userID\titemID\tx_label"
ROWS = ["0\t0\t0", "0\t1\t0", "0\t2\t1", "0\t3\t2", "1\t1\t0", "1\t2\t0", "1\t0\t1", "1\t3\t2"]


def _lmmrec(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lmmrec", *args],
        capture_output=True,
        text=True,
        timeout=180,
    )


def _stderr_lines(completed: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in completed.stderr, completed.stderr
    return [line for line in completed.stderr.splitlines() if line.strip()]


def _mmrec_folder(folder: Path, rows: list[str]) -> Path:
    folder.mkdir()
    (folder / "shop.inter").write_text("\n".join([HEADER, *rows]) + "\n")
    return folder


def test_an_id_beyond_64_bits_is_one_error_line(tmp_path: Path) -> None:
    folder = _mmrec_folder(tmp_path / "shop", [*ROWS, "1\t123456789012345678901234567890\t0"])
    completed = _lmmrec("dataset", "info", str(folder))
    assert completed.returncode == 1
    (line,) = _stderr_lines(completed)
    assert line.startswith(f"error: {folder / 'shop.inter'}: column 'itemID' holds 1 value(s)")
    assert "too large for a 64-bit integer" in line and "on line 10" in line


def test_a_yaml_syntax_error_is_one_line_with_file_line_and_column(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("model: bpr\ntrain:\n  lr: [0.1\n  epochs: 3\n")
    completed = _lmmrec("train", "--config", str(config))
    assert completed.returncode == 1
    (line,) = _stderr_lines(completed)
    assert line.startswith(f"error: {config}:4:9: not valid YAML (")
    assert "flow sequence started at 3:7" in line and "fix: close the [" in line


def test_a_warning_is_one_line_without_the_source_location(tmp_path: Path) -> None:
    # user 2 has a test interaction but nothing in training: dropped with a warning
    folder = _mmrec_folder(tmp_path / "shop", [*ROWS, "2\t0\t2"])
    completed = _lmmrec("dataset", "info", str(folder))
    assert completed.returncode == 0, completed.stderr
    (line,) = _stderr_lines(completed)
    assert line.startswith("warning: ") and "dropped 1 valid/test interactions" in line
    assert ".py:" not in line and "UserWarning" not in line
    assert "users" in completed.stdout


class _Payload:
    """Unpickling this runs a shell command that writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def test_a_pickled_payload_in_a_dataset_cache_is_one_line_and_never_runs(tmp_path: Path) -> None:
    # 10 users x 10 of 30 items (8 train, 1 valid, 1 test each): enough items for K=20
    rows = [f"{u}\t{(3 * u + j) % 30}\t{max(0, j - 7)}" for u in range(10) for j in range(10)]
    folder = _mmrec_folder(tmp_path / "shop", rows)
    rng = np.random.default_rng(0)
    np.save(folder / "image_feat.npy", rng.normal(size=(30, 6)).astype(np.float32))
    np.save(folder / "text_feat.npy", rng.normal(size=(30, 5)).astype(np.float32))
    train = ["train", "--dataset", str(folder), "--model", "dualgnn", "--no-resume"]
    train += ["features=mmrec", "epochs=1", "ks=[10,20]", f"output_dir={tmp_path / 'runs'}"]
    first = _lmmrec(*train)
    assert first.returncode == 0, first.stderr
    (cached,) = (folder / "cache").glob("user-cooccurrence-*.pt")
    marker = tmp_path / "pwned"
    with open(cached, "wb") as handle:  # a shared dataset folder with code in its cache
        pickle.dump(_Payload(marker), handle)
    again = _lmmrec(*train)
    assert again.returncode == 0, again.stderr
    assert not marker.exists()
    lines = _stderr_lines(again)
    assert [line for line in lines if "cache" in line] == [
        f"cache file {cached} not used (refused: not a file of plain tensors (damaged, or a "
        "pickle of other objects)); rebuilding it"
    ]


def test_attach_items_that_match_nothing_is_one_error_line(tmp_path: Path) -> None:
    folder = _mmrec_folder(tmp_path / "shop", ROWS)
    (folder / "i_id_mapping.csv").write_text("asin\titemID\nB0\t0\nB1\t1\nB2\t2\nB3\t3\n")
    meta = tmp_path / "meta_Other.json"
    meta.write_text("{'asin': 'Q1', 'title': 'x'}\n")
    completed = _lmmrec("data", "attach-items", str(folder), "--items", str(meta))
    assert completed.returncode == 1
    (line,) = _stderr_lines(completed)
    assert line.startswith(f"error: {meta}: none of the 4 items of {folder}")
    assert "its ids look like Q1" in line


def test_serving_a_folder_that_is_no_bundle_says_so_and_never_that_it_serves(
    tmp_path: Path,
) -> None:
    completed = _lmmrec("serve", str(tmp_path))
    assert completed.returncode == 1
    (line,) = _stderr_lines(completed)
    assert line.startswith(f"error: {tmp_path} is not a serving bundle (bundle.json is missing)")
    assert "serving" not in completed.stdout
