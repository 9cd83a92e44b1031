"""Provenance blocks: what produced a file, so a reader can tell two results apart.

Wall-clock times never go in here (they go to benchmarks), so reruns stay byte-identical.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import trax

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def provenance(config: dict[str, Any], input_sha256: str | dict[str, str], **extra: Any) -> dict[str, Any]:
    """Build the ``provenance`` block shared by every JSON output.

    Args:
        config: The config subset that shaped this output (the rule's params).
        input_sha256: sha256 of the rule's main input file, or input name -> sha256 when several matter.
        **extra: Stage-specific facts, e.g. ``models`` or ``ffmpeg``.
    """
    return {"trax_version": trax.__version__, "config": config, "input_sha256": input_sha256, **extra}
