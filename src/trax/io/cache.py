"""Where Trax keeps files it builds once from installed packages (joined Whisper base weights,
int8 copies of Whisper weights, the voice encoder's exported weights): outside the repository,
shared by every checkout."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from trax.io.jsonio import staging_dir

CACHE_ENV = "TRAX_CACHE_DIR"


def cache_dir() -> Path:
    """``$TRAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/trax``, else ``~/.cache/trax``."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "trax"


def build_once(target: Path, ready: Callable[[Path], bool], build: Callable[[Path], bool]) -> Path | None:
    """The folder ``target``, built by ``build`` unless ``ready`` says it already is.

    ``build`` fills a staging folder beside ``target``, which is then renamed into place, so readers
    never see half a folder; a lock file makes racing processes build it once, and a target that is
    not ``ready`` (a corrupt cache) is rebuilt.

    Returns:
        ``target``, or ``None`` when ``build`` returned False (nothing is left behind).
    """
    if ready(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ready(target):  # another process built it while we waited
            return target
        building = staging_dir(target)
        try:
            if not build(building):
                return None
            if target.exists():
                shutil.rmtree(target)
            os.rename(building, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(building)
    return target
