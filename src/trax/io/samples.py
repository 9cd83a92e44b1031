"""Input discovery: turn the ``inputs`` config key into recordings with stable, unique ids.

``inputs`` is a folder (searched recursively for media files), a glob pattern, a single media
file, a sample sheet (``.tsv``/``.csv``), or a list of any of these.
"""

from __future__ import annotations

import glob
import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from trax.errors import TraxError

#: File name extensions picked up when scanning a folder or glob. Anything ffmpeg decodes works
#: when named explicitly (a sample sheet or a single file); a folder scan needs a filter so that
#: reference transcripts and notes lying beside the audio are not mistaken for recordings.
MEDIA_EXTENSIONS = frozenset(
    ".wav .wave .flac .mp3 .m4a .mp4 .m4v .webm .ogg .oga .opus .wma .aac .aif .aiff .mka .mkv "
    ".mov .avi .wv .amr .3gp .ac3 .caf".split()
)
SHEET_EXTENSIONS = frozenset({".tsv", ".csv"})
_GLOB_CHARS = re.compile(r"[*?\[]")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
SAMPLE_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*"


@dataclass(frozen=True)
class Sample:
    """One recording to process.

    Attributes:
        id: Filesystem-safe id, used as ``results/{id}/``.
        path: Source media path as given (made absolute only if it came from a sheet).
        options: Per-file settings from the sample sheet (e.g. ``language``, ``num_speakers``),
            missing values dropped.
    """

    id: str
    path: str
    options: dict[str, Any] = field(default_factory=dict)


def sample_id_from_name(path: str | Path) -> str:
    """Derive a stable, filesystem-safe id from a file name.

    Accents are folded to ASCII (``trñ00.wav`` → ``trn00``), runs of other characters become
    ``_`` (``my talk.mp3`` → ``my_talk``). A name with nothing left (e.g. only CJK characters)
    gets ``rec-`` plus a short hash of the name, so it is still stable.
    """
    stem = Path(path).stem
    folded = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii")
    safe = _UNSAFE.sub("_", folded).strip("._-")
    if not safe:
        safe = "rec-" + hashlib.sha1(stem.encode("utf-8")).hexdigest()[:8]
    return safe


def discover(inputs: str | list[str], base_dir: str | Path = ".") -> list[Sample]:
    """Resolve ``inputs`` to samples, sorted by id.

    Args:
        inputs: A folder, glob, media file or sample sheet, or a list of them.
        base_dir: Folder that relative ``inputs`` are resolved against (the workflow's workdir).

    Raises:
        TraxError: When an input names nothing, or two inputs would get the same id.
    """
    entries = [inputs] if isinstance(inputs, str) else list(inputs)
    samples: list[Sample] = []
    for entry in entries:
        samples.extend(_expand(entry, Path(base_dir)))
    check_unique(samples)
    return sorted(samples, key=lambda sample: sample.id)


def check_unique(samples: list[Sample]) -> None:
    """Raise :class:`TraxError` naming both inputs when two samples share an id.

    Ids are compared case-insensitively too, because ``results/A`` and ``results/a`` are the same
    folder on macOS and Windows file systems.
    """
    seen: dict[str, Sample] = {}
    for sample in samples:
        other = seen.get(sample.id.casefold())
        if other is not None:
            raise TraxError(
                sample.path,
                f"sample id '{sample.id}' collides with '{other.id}' from {other.path}; "
                "rename one file or give explicit ids in a sample sheet",
            )
        seen[sample.id.casefold()] = sample


def _expand(entry: str, base_dir: Path) -> list[Sample]:
    path = Path(entry)
    if not path.is_absolute():
        path = base_dir / path
    if _GLOB_CHARS.search(entry):
        matches = [Path(p) for p in glob.glob(str(path), recursive=True)]
        found = [_sample(p, entry) for p in sorted(matches) if _is_media(p)]
        if not found:
            raise TraxError(entry, "inputs glob matches no media files")
        return found
    if path.is_dir():
        found = [_sample(p, entry) for p in sorted(path.rglob("*")) if _is_media(p)]
        if not found:
            raise TraxError(entry, "inputs folder contains no media files")
        return found
    if path.suffix.lower() in SHEET_EXTENSIONS:
        return samples_from_sheet(read_sheet(path), path.parent)
    if path.is_file():
        return [_sample(path, entry)]
    where = "" if Path(entry).is_absolute() else f" (relative to the working directory {base_dir.resolve()})"
    raise TraxError(entry, f"inputs path does not exist{where}")


def _is_media(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in MEDIA_EXTENSIONS and not path.name.startswith(".")


def _sample(path: Path, given_as: str) -> Sample:
    return Sample(id=sample_id_from_name(path), path=_display_path(path, given_as))


def _display_path(path: Path, given_as: str) -> str:
    # Keep paths relative when the user gave a relative input, so results do not depend on where
    # the repository is checked out.
    if Path(given_as).is_absolute():
        return str(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def read_sheet(path: Path) -> pd.DataFrame:
    """Read a sample sheet (tab-separated for ``.tsv``, comma-separated for ``.csv``).

    All columns are read as strings except the speaker counts; empty cells become missing values.
    """
    if not path.is_file():
        raise TraxError(path, "sample sheet does not exist")
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        sheet = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, comment="#")
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise TraxError(path, f"cannot parse sample sheet: {exc}") from exc
    sheet = sheet.replace("", None)
    if "path" not in sheet.columns:
        raise TraxError(path, "sample sheet needs a 'path' column")
    for column in ("num_speakers", "min_speakers", "max_speakers"):
        if column in sheet.columns:
            sheet[column] = pd.to_numeric(sheet[column], errors="raise").astype("Int64")
    return sheet


#: Sheet columns naming reference files (evaluate).
REFERENCE_COLUMNS = frozenset({"reference_text", "reference_rttm", "reference_uem"})
#: Sheet columns naming files; like ``path``, relative ones are relative to the sheet's folder.
FILE_COLUMNS = REFERENCE_COLUMNS | {"corrections"}


def samples_from_sheet(sheet: pd.DataFrame, sheet_dir: Path) -> list[Sample]:
    """Build samples from a (validated) sample sheet.

    Relative ``path`` and reference cells are resolved against the sheet's own folder, so a sheet can travel
    with its data. A missing source file is *not* an error here: that recording's ``normalize`` job
    fails with a clear message while the others still run.
    """
    samples = []
    for record in sheet.to_dict(orient="records"):
        source = Path(str(record["path"]))
        if not source.is_absolute():
            source = sheet_dir / source
        options = {k: _plain(v) for k, v in record.items() if k not in ("id", "path") and not pd.isna(v)}
        for column in FILE_COLUMNS.intersection(options):
            reference = Path(str(options[column]))
            options[column] = str(reference if reference.is_absolute() else sheet_dir / reference)
        sample_id = record.get("id")
        if sample_id is None or pd.isna(sample_id):
            sample_id = sample_id_from_name(source)
        elif not re.fullmatch(SAMPLE_ID_PATTERN, str(sample_id)):
            raise TraxError(source, f"sample sheet id '{sample_id}' must match {SAMPLE_ID_PATTERN}")
        samples.append(Sample(id=str(sample_id), path=_display_path(source, str(source)), options=options))
    return samples


def _plain(value: Any) -> Any:
    # pandas scalars (numpy ints) do not survive JSON or Snakemake's params comparison cleanly.
    return value.item() if hasattr(value, "item") else value
