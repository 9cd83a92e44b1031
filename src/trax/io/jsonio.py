"""Byte-stable JSON and atomic file writes.

Every output is written to a hidden temporary file in the destination folder and moved into place
with :func:`os.replace`, so a killed job never leaves a half-written file under its real name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterable, Iterator
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
        from trax.io.schemas import validate

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


# --- Documents that grow with the recording ------------------------------------------------------
#
# A transcript or merged.json holds one list that grows with the recording (segments, utterances:
# ~36,000 words at 4 hours, ~20 MB of Python objects). Jobs that run in the Snakemake process read
# such a list one item at a time and write it the same way, so that process stays the same size
# whatever the recording's length; everything else in the document is small (its "head").


def read_json_head(path: str | os.PathLike[str], lists: Collection[str]) -> dict[str, Any]:
    """The top-level fields of a JSON object file, without the values of the keys in ``lists``.

    Those values are parsed past without being built, so reading the head of a 4-hour transcript
    takes memory for the head only. Numbers come back as ``json.load`` gives them (int or float).
    """
    import ijson

    head: dict[str, Any] = {}
    with open(path, "rb") as handle:
        events = ijson.basic_parse(handle, use_float=True)
        next(events)  # the document's start_map
        for event, key in events:
            if event == "end_map":
                break
            if key in lists:
                _skip_value(events)
            else:
                head[key] = _build_value(events)
    return head


def _build_value(events: Iterator[tuple[str, Any]]) -> Any:
    import ijson

    builder = ijson.ObjectBuilder()
    depth = 0
    for event, value in events:
        builder.event(event, value)
        depth += event in ("start_map", "start_array")
        depth -= event in ("end_map", "end_array")
        if depth == 0:
            break
    return builder.value


def _skip_value(events: Iterator[tuple[str, Any]]) -> None:
    depth = 0
    for event, _ in events:
        depth += event in ("start_map", "start_array")
        depth -= event in ("end_map", "end_array")
        if depth == 0:
            return


def iter_json_list(path: str | os.PathLike[str], key: str) -> Iterator[Any]:
    """The items of the top-level list ``key`` of a JSON object file, built one at a time."""
    import ijson

    with open(path, "rb") as handle:
        yield from ijson.items(handle, f"{key}.item", use_float=True)


#: Stands for the streamed list while the head is encoded; the list's items replace it.
_LIST_PLACEHOLDER = "<trax: streamed list>"
#: Items of a top-level list sit two levels deep (2-space indent).
_ITEM_INDENT = "\n    "


def write_json_streamed(path: str | os.PathLike[str], key: str, items: Iterable[Any],
                        head: Callable[[], dict[str, Any]], schema: str | None = None,
                        item_schema: str | None = None) -> None:
    """Write a JSON document whose top-level list ``key`` is produced item by item, atomically.

    The bytes are exactly :func:`write_json_atomic`'s for ``{**head(), key: list(items)}``, but no
    more than one item is held at a time: items are validated and encoded as they come into a
    spool file next to ``path``; ``head`` is called after the last item (so it may report totals
    over them), and the document is written around the spooled list.

    Args:
        path: Destination file.
        key: The name of the streamed top-level list.
        items: Its items, in order.
        head: Returns every other top-level field.
        schema: Name of the document's schema (validated with ``key`` empty), as in
            :func:`write_json_atomic`.
        item_schema: ``$ref`` (``<file>#<pointer>``) of the schema of one item, e.g.
            ``"merged.schema.yaml#/properties/utterances/items"``; each item is validated
            against it as it comes (``schema`` sees the list empty).
    """
    from trax.io.schemas import validate, validate_ref

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile("w+", encoding="utf-8", dir=path.parent) as spool:
        count = 0
        for item in items:
            if item_schema is not None:
                validate_ref(item, item_schema)
            spool.write(_ITEM_INDENT[1:] if count == 0 else "," + _ITEM_INDENT)
            spool.writelines(chunk.replace("\n", _ITEM_INDENT) for chunk in _ENCODER.iterencode(item))
            count += 1
        fields = head()
        if schema is not None:
            validate({**fields, key: []}, schema)
        before, placeholder, after = dumps({**fields, key: _LIST_PLACEHOLDER}).partition(f'"{_LIST_PLACEHOLDER}"')
        if not placeholder or not before.endswith(f"\n  {json.dumps(key)}: "):
            raise ValueError(f"{path}: a field of the head holds the placeholder of '{key}'")
        spool.seek(0)
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
            handle.write(before)
            if count:
                handle.write("[\n")
                shutil.copyfileobj(spool, handle)
                handle.write("\n  ]")
            else:
                handle.write("[]")
            handle.write(after)
