"""Byte-stable JSON and atomic file writes.

Every output is written to a hidden temporary file in the destination folder and moved into place
with :func:`os.replace`, so a killed job never leaves a half-written file under its real name. The
file then gets the mode a plain ``open(path, "w")`` would give it (0666 & ~umask), not the private
0600 of the temporary file, so teammates on a shared disk can read the results.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

from trax.errors import TraxError


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


def _umask_from_proc() -> int | None:
    """The umask from ``/proc/self/status`` (Linux 4.7+), or None where that line is missing."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _umask_at_import() -> int:
    # os.umask can only be read by setting it; setting and restoring it races with any thread that
    # creates a file meanwhile (Snakemake runs jobs in threads), so it is done once, at import, and
    # only where /proc cannot tell.
    umask = _umask_from_proc()
    if umask is None:
        umask = os.umask(0o022)
        os.umask(umask)
    return umask


_IMPORT_UMASK = _umask_at_import()


def process_umask() -> int:
    """The process umask, read without changing it (the value at import where /proc is missing)."""
    umask = _umask_from_proc()
    return _IMPORT_UMASK if umask is None else umask


def file_mode() -> int:
    """The mode a plain ``open(path, "w")`` gives a new file: 0666 & ~umask."""
    return 0o666 & ~process_umask()


def dir_mode() -> int:
    """The mode a plain ``mkdir`` gives a new folder: 0777 & ~umask."""
    return 0o777 & ~process_umask()


def staging_dir(destination: str | os.PathLike[str]) -> Path:
    """A new hidden folder beside ``destination`` to build it in, then rename into place.

    Unlike :func:`tempfile.mkdtemp` (always 0700) it gets the mode of a plain ``mkdir``, so the
    renamed result is readable as any other output. The caller removes it on failure.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    staging.chmod(dir_mode())
    return staging


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``destination``; move it into place only on success.

    The temporary file is created 0600 (:func:`tempfile.mkstemp`) and given :func:`file_mode` just
    before the move, whoever wrote it (Python, ffmpeg, pandas).

    Args:
        destination: The final file path. Its folder is created if needed.
        suffix: Extension for the temporary file, for tools that infer the format from the name.
    """
    destination = Path(destination)
    with storage_errors(destination, any_errno=True):
        destination.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=suffix + ".tmp", dir=destination.parent)
    os.close(fd)
    tmp_path = Path(tmp_name)
    try:
        with storage_errors(destination):
            yield tmp_path
            os.chmod(tmp_path, file_mode())
            os.replace(tmp_path, destination)
    finally:
        tmp_path.unlink(missing_ok=True)


#: Errors that mean "the destination's disk cannot take this file", whatever the data: reported as
#: a one-line error naming the output (not a traceback), since freeing space and rerunning fixes it.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


@contextlib.contextmanager
def storage_errors(destination: str | os.PathLike[str], any_errno: bool = False) -> Iterator[None]:
    """Turn an :class:`OSError` of writing ``destination`` into a :class:`~trax.errors.TraxError`
    naming it: one of :data:`STORAGE_ERRNOS` (full disk, quota, read-only), or any errno when
    ``any_errno`` (the block only creates the file or its folder, e.g. permission denied)."""
    try:
        yield
    except OSError as exc:
        if not (any_errno or exc.errno in STORAGE_ERRNOS):
            raise
        reason = exc.strerror or str(exc)
        raise TraxError(destination, f"cannot write it: {reason}") from None


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
    with storage_errors(path, any_errno=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        spool = tempfile.TemporaryFile("w+", encoding="utf-8", dir=path.parent)
    with spool, storage_errors(path):
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
        spool.seek(0)
        # The head is written as the encoder yields it (a head may hold a list that grows too, e.g.
        # refine's changes: one string of it would be held whole, and its pieces before that).
        marker, expected = json.dumps(_LIST_PLACEHOLDER), [json.dumps(key), ": "]
        recent: list[str] = []
        placed = False
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
            for chunk in _ENCODER.iterencode({**fields, key: _LIST_PLACEHOLDER}):
                if chunk == marker and not placed:
                    if len(recent) < 3 or recent[-2:] != expected or not recent[-3].endswith("\n  "):  # top level
                        raise ValueError(f"{path}: a field of the head holds the placeholder of '{key}'")
                    placed = True
                    if count:
                        handle.write("[\n")
                        shutil.copyfileobj(spool, handle)
                        handle.write("\n  ]")
                    else:
                        handle.write("[]")
                    continue
                handle.write(chunk)
                recent = [*recent[-2:], chunk]
            if not placed:
                raise ValueError(f"{path}: the head of '{key}' was not written")
            handle.write("\n")
