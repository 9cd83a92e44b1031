"""Where Trax keeps files it builds once from installed packages (joined Whisper base weights,
the voice encoder's exported weights): outside the repository, shared by every checkout."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "TRAX_CACHE_DIR"


def cache_dir() -> Path:
    """``$TRAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/trax``, else ``~/.cache/trax``."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "trax"
