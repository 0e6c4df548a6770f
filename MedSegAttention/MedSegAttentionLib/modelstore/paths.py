"""Where the model store lives by default. Imports nothing heavy, so Slicer's GUI process can use it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV_MODEL_DIR = "MEDSEG_MODEL_DIR"


def default_store_root() -> Path:
    """``$MEDSEG_MODEL_DIR``, else the user's cache folder (per platform) + ``medsegattention/models``."""
    if os.environ.get(ENV_MODEL_DIR):
        return Path(os.environ[ENV_MODEL_DIR]).expanduser()
    if sys.platform.startswith("win"):
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "medsegattention" / "models"


def bundled_weights_dir() -> Path:
    """Weights shipped inside the package (``MedSegAttentionLib/modelstore/bundled``): cards whose ``weights.bundled``
    is true run on a fresh install with no download; an installed file of the same name takes precedence."""
    return Path(__file__).resolve().parent / "bundled"
