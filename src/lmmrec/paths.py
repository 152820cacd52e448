"""Where lmmrec keeps data it generates or caches: ``$LMMREC_HOME``."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def lmmrec_home() -> Path:
    """``$LMMREC_HOME`` if set, else the platform's user data folder (``~/.local/share/lmmrec``)."""
    return Path(os.environ.get("LMMREC_HOME") or platformdirs.user_data_dir("lmmrec"))
