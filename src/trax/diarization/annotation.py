"""Diarization results and their files: typed turns, the RTTM writer/reader, summary statistics.

The RTTM contract (read by merge and evaluation)::

    SPEAKER <uri> 1 <start> <duration> <NA> <NA> <label> <NA> <NA>

one line per speaker turn, ``uri`` = the sample id, times in seconds with 3 decimals, lines sorted
by (start, label, duration). Labels are whatever the backend produced (``SPEAKER_00`` …, numbered by
first speech). A recording without speech gives an empty file.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from trax.errors import TraxError

#: Decimal places of times in RTTM and JSON (milliseconds; far below any backend's resolution).
TIME_DIGITS = 3


@dataclass(frozen=True, order=True)
class Turn:
    """One speaker turn: ``speaker`` talks from ``start`` to ``end`` (seconds)."""

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


def first_speech_names(turns: list[Turn], prefix: str = "SPEAKER_") -> dict[str, str]:
    """Backend label -> ``SPEAKER_00``, ``SPEAKER_01`` … in order of the speakers' first turn."""
    names: dict[str, str] = {}
    for turn in sort_turns(turns):
        names.setdefault(turn.speaker, f"{prefix}{len(names):02d}")
    return names


def relabel_by_first_speech(turns: list[Turn], prefix: str = "SPEAKER_") -> list[Turn]:
    """Rename speakers ``SPEAKER_00``, ``SPEAKER_01`` … in order of their first turn."""
    names = first_speech_names(turns, prefix)
    return sort_turns([Turn(t.start, t.end, names[t.speaker]) for t in turns])


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
        provenance: See :func:`trax.provenance.provenance`.
    """

    sample_id: str
    duration: float
    backend: str
    turns: list[Turn]
    settings: dict[str, Any]
    details: dict[str, Any]
    provenance: dict[str, Any]

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
            "speakers": [asdict(s) for s in self.speakers()],
            "turns": [{"start": t.start, "end": t.end, "speaker": t.speaker} for t in self.turns],
            "settings": self.settings,
            "details": self.details,
            "provenance": self.provenance,
        }

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


def read_rttm(path: str | os.PathLike[str], uri: str | None = None) -> dict[str, list[Turn]]:
    """Read an RTTM file into ``{uri: turns}`` (only ``SPEAKER`` lines; ``uri`` filters one file).

    Raises:
        TraxError: On a malformed ``SPEAKER`` line (naming the file and line number).
    """
    result: dict[str, list[Turn]] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            fields = line.split()
            if not fields or fields[0] != "SPEAKER":
                continue
            try:
                start, duration, label = float(fields[3]), float(fields[4]), fields[7]
            except (IndexError, ValueError):
                raise TraxError(path, f"line {number}: not an RTTM SPEAKER line: {line.strip()!r}") from None
            if uri is not None and fields[1] != uri:
                continue
            result.setdefault(fields[1], []).append(Turn(start, start + duration, label))
    return {key: sort_turns(turns) for key, turns in result.items()}
