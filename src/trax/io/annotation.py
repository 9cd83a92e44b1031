"""Diarization results and their files: typed turns, the RTTM writer/reader, summary statistics.

The RTTM contract (read by merge and evaluation)::

    SPEAKER <uri> 1 <start> <duration> <NA> <NA> <label> <NA> <NA>

one line per speaker turn, ``uri`` = the sample id, times in seconds with 3 decimals, lines sorted
by (start, label, duration). Labels are whatever the backend produced (``SPEAKER_00`` …, numbered by
first speech). A recording without speech gives an empty file.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trax.errors import TraxError

#: Decimal places of times in RTTM and JSON (milliseconds; far below any backend's resolution).
TIME_DIGITS = 3
#: Decimal places of stored embedding components: cosine scores move by < 1e-4, and the bytes
#: stay the same across runs (float noise in the last bits is rounded away).
EMBEDDING_DIGITS = 5


@dataclass(frozen=True, order=True)
class Turn:
    """One speaker turn: ``speaker`` talks from ``start`` to ``end`` (seconds).

    The one turn type of the package: backends produce it, the RTTM reader returns it, merge
    assigns words from it and speaker identification scores per-speaker time with it.
    """

    start: float
    end: float
    speaker: str

    @property
    def duration(self) -> float:
        return round(self.end - self.start, TIME_DIGITS)


def sort_turns(turns: list[Turn]) -> list[Turn]:
    """Rounded, non-empty turns in RTTM order (start, then speaker, then end)."""
    rounded = (Turn(round(t.start, TIME_DIGITS), round(t.end, TIME_DIGITS), t.speaker) for t in turns)
    return sorted((t for t in rounded if t.end > t.start), key=lambda t: (t.start, t.speaker, t.end))


def first_speech_labels(turns: list[Turn], prefix: str = "SPEAKER_") -> dict[str, str]:
    """Backend label -> ``SPEAKER_00``, ``SPEAKER_01`` … in order of each speaker's first turn."""
    names: dict[str, str] = {}
    for turn in sort_turns(turns):
        names.setdefault(turn.speaker, f"{prefix}{len(names):02d}")
    return names


def relabel_by_first_speech(turns: list[Turn], prefix: str = "SPEAKER_") -> list[Turn]:
    """Rename speakers ``SPEAKER_00``, ``SPEAKER_01`` … in order of their first turn."""
    names = first_speech_labels(turns, prefix)
    return sort_turns([Turn(t.start, t.end, names[t.speaker]) for t in turns])


def round_embedding(vector: Any) -> list[float]:
    """An embedding as JSON numbers: L2-normalised, then rounded to :data:`EMBEDDING_DIGITS`."""
    values = [float(v) for v in vector]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return [round(v / norm, EMBEDDING_DIGITS) + 0.0 for v in values]


def speech_time(turns: list[Turn]) -> float:
    """Total time in which at least one speaker talks."""
    total, cursor = 0.0, float("-inf")
    for turn in sorted(turns):
        if turn.end <= cursor:
            continue
        total += turn.end - max(turn.start, cursor)
        cursor = turn.end
    return total


def overlap_time(turns: list[Turn]) -> float:
    """Total time in which two or more speakers talk at once."""
    events = sorted([(t.start, 1) for t in turns] + [(t.end, -1) for t in turns])
    total, active, previous = 0.0, 0, 0.0
    for time, change in events:
        if active >= 2:
            total += time - previous
        active += change
        previous = time
    return total


@dataclass
class SpeakerStats:
    """Per-speaker summary: number of turns and speech time (seconds, overlaps counted for each)."""

    label: str
    turns: int
    speech_s: float


@dataclass
class Diarization:
    """A diarization file pair (``diarization.rttm`` + ``diarization.json``).

    Attributes:
        sample_id: The recording's id (the RTTM uri).
        duration: Audio duration in seconds.
        backend: ``embedded`` or ``pyannote``.
        turns: Speaker turns, sorted.
        settings: The effective settings (config section with per-file overrides applied).
        details: Backend facts worth keeping (e.g. the speaker count chosen and why).
        provenance: See :func:`trax.io.provenance.provenance`.
        embeddings: Speaker label -> its voice embedding (L2-normalised; the clustering centroid of
            the windows the final labelling gives that speaker alone), kept so speaker
            identification and cross-recording linking never recompute them. Empty when the
            backend gives none.
        embedding_model: ``{"id", "weights_sha256"}`` of the model that made ``embeddings``; a
            profile store made by another model must never be compared with them.
    """

    sample_id: str
    duration: float
    backend: str
    turns: list[Turn]
    settings: dict[str, Any]
    details: dict[str, Any]
    provenance: dict[str, Any]
    embeddings: dict[str, list[float]] = field(default_factory=dict)
    embedding_model: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.turns = sort_turns(self.turns)

    def speakers(self) -> list[SpeakerStats]:
        stats: dict[str, SpeakerStats] = {}
        for turn in self.turns:
            entry = stats.setdefault(turn.speaker, SpeakerStats(turn.speaker, 0, 0.0))
            entry.turns += 1
            entry.speech_s += turn.end - turn.start
        return [SpeakerStats(s.label, s.turns, round(s.speech_s, TIME_DIGITS)) for s in stats.values()]

    def serialize(self) -> dict[str, Any]:
        """JSON-ready dict matching ``workflow/schemas/diarization.schema.yaml``."""
        return {
            "sample_id": self.sample_id,
            "duration": round(self.duration, TIME_DIGITS),
            "backend": self.backend,
            "num_speakers": len({t.speaker for t in self.turns}),
            "speech_s": round(speech_time(self.turns), TIME_DIGITS),
            "overlap_s": round(overlap_time(self.turns), TIME_DIGITS),
            "speakers": [self._speaker_entry(s) for s in self.speakers()],
            "turns": [{"start": t.start, "end": t.end, "speaker": t.speaker} for t in self.turns],
            "settings": self.settings,
            "details": self.details,
            "provenance": self.provenance,
            **({"embedding_model": self.embedding_model} if self.embedding_model else {}),
        }

    def _speaker_entry(self, stats: SpeakerStats) -> dict[str, Any]:
        entry: dict[str, Any] = asdict(stats)
        if stats.label in self.embeddings:
            entry["embedding"] = round_embedding(self.embeddings[stats.label])
        return entry

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Diarization:
        """Inverse of :meth:`serialize` (derived statistics are recomputed)."""
        return cls(
            sample_id=data["sample_id"],
            duration=data["duration"],
            backend=data["backend"],
            turns=[Turn(t["start"], t["end"], t["speaker"]) for t in data["turns"]],
            settings=data["settings"],
            details=data["details"],
            provenance=data["provenance"],
            embeddings={s["label"]: s["embedding"] for s in data["speakers"] if "embedding" in s},
            embedding_model=data.get("embedding_model"),
        )

    def rttm(self) -> str:
        return format_rttm(self.sample_id, self.turns)


def format_rttm(uri: str, turns: list[Turn]) -> str:
    """RTTM text for ``turns`` (empty string when there are none)."""
    if any(ch.isspace() for ch in uri):
        raise ValueError(f"RTTM uri must not contain whitespace: {uri!r}")
    lines = []
    for turn in sort_turns(turns):
        label = "".join("_" if ch.isspace() else ch for ch in turn.speaker)
        lines.append(f"SPEAKER {uri} 1 {turn.start:.3f} {turn.duration:.3f} <NA> <NA> {label} <NA> <NA>\n")
    return "".join(lines)


def read_rttm(path: str | os.PathLike[str]) -> dict[str, list[Turn]]:
    """Read an RTTM file into ``{uri: turns}``: the package's one RTTM reader (merge, figures,
    evaluation benches and speaker identification all come through here).

    Only ``SPEAKER`` lines count; comments (``#``) and other record types are skipped. Turns are
    sorted and rounded as :func:`sort_turns` does (zero-length turns are dropped).

    Raises:
        TraxError: When the file cannot be read, or on a malformed ``SPEAKER`` line (fewer than 8
            fields, a time that is not a number, a negative time), naming the file and line number.
    """
    result: dict[str, list[Turn]] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise TraxError(path, f"cannot read RTTM: {exc}") from None
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields or fields[0] != "SPEAKER":
            continue
        try:
            if len(fields) < 8:
                raise ValueError("expected at least 8 fields")
            start, duration = float(fields[3]), float(fields[4])
            if start < 0 or duration < 0:
                raise ValueError("negative time")
        except ValueError as exc:
            raise TraxError(path, f"line {number}: malformed RTTM SPEAKER line ({exc}): {line.strip()!r}") from None
        result.setdefault(fields[1], []).append(Turn(start, start + duration, fields[7]))
    return {key: sort_turns(turns) for key, turns in result.items()}


def rttm_turns(path: str | os.PathLike[str], uri: str | None = None) -> list[Turn]:
    """The turns of one recording in an RTTM file (``uri``), or of every line when ``uri`` is None
    (a Trax ``diarization.rttm`` holds one recording)."""
    by_uri = read_rttm(path)
    if uri is not None:
        return by_uri.get(uri, [])
    return sort_turns([turn for turns in by_uri.values() for turn in turns])
