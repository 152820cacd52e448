"""What a user sees when a file is wrong: one line on stderr, never a traceback (issue 14).

These run the real entry point (``python -m lmmrec``) in a subprocess, since ``main()`` is what
turns errors and warnings into single lines.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
