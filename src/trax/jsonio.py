"""Byte-stable JSON and atomic file writes.

Every output is written to a hidden temporary file in the destination folder and moved into place
with :func:`os.replace`, so a killed job never leaves a half-written file under its real name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


# The one way Trax writes JSON: sorted keys, 2-space indent, UTF-8, no NaN, final newline.
_ENCODER = json.JSONEncoder(indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)


def dumps(obj: Any) -> str:
    """Serialize ``obj`` the one way Trax writes JSON, as one string (for small documents)."""
    return _ENCODER.encode(obj) + "\n"


def sha256_json(obj: Any) -> str:
    """sha256 of :func:`dumps` of ``obj``, hashed chunk by chunk so no whole copy is built."""
    digest = hashlib.sha256()
    for chunk in _ENCODER.iterencode(obj):
        digest.update(chunk.encode("utf-8"))
    digest.update(b"\n")
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``destination``; move it into place only on success.

    Args:
        destination: The final file path. Its folder is created if needed.
        suffix: Extension for the temporary file, for tools that infer the format from the name.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=suffix + ".tmp", dir=destination.parent)
    os.close(fd)
    tmp_path = Path(tmp_name)
    try:
        yield tmp_path
        os.replace(tmp_path, destination)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` as UTF-8 to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike[str], obj: Any, schema: str | None = None) -> None:
    """Validate ``obj`` against the named schema (if given), then write it atomically.

    Args:
        path: Destination file.
        obj: JSON-serializable data.
        schema: Name of a schema in ``workflow/schemas`` (e.g. ``"transcript"``).
    """
    if schema is not None:
        from trax.schemas import validate

        validate(obj, schema)
    # Streamed: with an indent the encoder yields ~25 small strings per word, and joining them
    # (json.dumps) held ~57 MB more at the peak for a 4-hour transcript than writing them as they come.
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.writelines(_ENCODER.iterencode(obj))
        handle.write("\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file written by Trax."""
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)
