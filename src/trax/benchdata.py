"""The shared evaluation set (``../shared/benchdata``): which items to score and their references.

Tests and benchmarks read the audio in place; nothing from it is copied into the repository.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

BENCHDATA_ENV = "TRAX_BENCHDATA"

#: Left out of the WER set: a derived copy of jfk.flac (same speech twice), and the stereo file whose
#: "reference" is Whisper-tiny's own output per channel, not a human transcript of the mono mix.
EXCLUDED_FROM_WER = frozenset({"faster-whisper/jfk.16k.wav", "faster-whisper/stereo_diarization.wav"})


def benchdata_dir() -> Path:
    """``$TRAX_BENCHDATA``, else ``shared/benchdata`` beside the repository checkout."""
    override = os.environ.get(BENCHDATA_ENV)
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[3] / "shared" / "benchdata"


@dataclass(frozen=True)
class Item:
    """One scored recording: its audio and its reference text."""

    path: Path
    reference: str


def read_manifest(root: Path | None = None) -> list[dict[str, str]]:
    """Rows of ``manifest.tsv``."""
    root = root or benchdata_dir()
    with open(root / "manifest.tsv", encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def reference_text(audio: Path) -> str:
    """The human reference for an audio file, whatever format its source repository used."""
    if audio.parent.name == "cards":
        return _sphinx_transcript(audio.parent / "cards.transcription")[audio.stem]
    for suffix in (".txt", ".lab"):
        candidate = audio.with_suffix(suffix)
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8").strip()
    if audio.name == "jfk.flac":
        return (audio.parent / "jfk.txt").read_text(encoding="utf-8").strip()
    raise FileNotFoundError(f"{audio}: no reference transcript found")


def _sphinx_transcript(path: Path) -> dict[str, str]:
    entries = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"\s*<s>(.*)</s>\s*\((\S+)\)\s*", line)
        if match:
            entries[match.group(2)] = " ".join(match.group(1).split())
    return entries


def wer_items(root: Path | None = None) -> list[Item]:
    """The dev category-a recordings with exact references (see :data:`EXCLUDED_FROM_WER`)."""
    root = root or benchdata_dir()
    items = []
    for row in read_manifest(root):
        if row["split"] != "dev" or "a" not in row["category"].split("/") or not row["duration_s"]:
            continue
        if row["path"] in EXCLUDED_FROM_WER:
            continue
        audio = root / row["path"]
        items.append(Item(path=audio, reference=reference_text(audio)))
    return items


@dataclass(frozen=True)
class DerItem:
    """One multi-speaker recording with its reference diarization.

    Attributes:
        uri: The id used by the reference RTTM/UEM (``trn00`` for ``trñ00.wav``).
        path: The audio file.
        rttm: Reference RTTM file (may hold other uris too).
        uem: Scoring regions as (start, end) seconds; the whole file when the source has no UEM.
    """

    uri: str
    path: Path
    rttm: Path
    uem: tuple[tuple[float, float], ...]


def _read_uem(path: Path) -> dict[str, list[tuple[float, float]]]:
    regions: dict[str, list[tuple[float, float]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if len(fields) >= 4:
            regions.setdefault(fields[0], []).append((float(fields[2]), float(fields[3])))
    return regions


def der_items(root: Path | None = None) -> list[DerItem]:
    """The dev multi-speaker set: pyannote's sample.wav and the debug protocol's dev00, dev01,
    trñ00 (uri ``trn00``) and trn01-trn09, each with its reference RTTM and UEM."""
    root = root or benchdata_dir()
    sample = root / "pyannote-audio" / "sample"
    debug = root / "pyannote-audio" / "debug"
    items = [DerItem("sample", sample / "sample.wav", sample / "sample.rttm", ((0.0, 30.0),))]
    for subset in ("development", "train"):
        uem = _read_uem(debug / f"debug.{subset}.uem")
        for name in (debug / f"debug.{subset}.lst").read_text(encoding="utf-8").split():
            audio = debug / f"{name}.wav"
            uri = name.replace("ñ", "n")  # the list says trñ00, the RTTM and UEM say trn00
            items.append(DerItem(uri, audio, debug / f"debug.{subset}.rttm", tuple(uem[uri])))
    return items


#: Derived copies and non-speech controls left out of long recordings (same speech twice, or none).
EXCLUDED_FROM_LONG = frozenset({"faster-whisper/jfk.16k.wav", "const-me-whisper/columbia.16k.wav",
                                "pyannote-audio/debug/empty.wav"})


def speech_clips(root: Path | None = None) -> list[Path]:
    """Every distinct real speech recording of the set (all splits and categories), in manifest order."""
    root = root or benchdata_dir()
    return [root / row["path"] for row in read_manifest(root)
            if row["duration_s"] and row["path"] not in EXCLUDED_FROM_LONG and (root / row["path"]).is_file()]


def build_long_recording(destination: Path, duration_s: float, workdir: Path, seed: int = 16) -> Path:
    """Write a ``duration_s``-second 16 kHz mono WAV of real speech from many clips and speakers.

    Every speech clip of the set is decoded once by ffmpeg to 16 kHz mono (in ``workdir``); the
    recording then takes them in a shuffled order, reshuffled (seeded) each time the set is used
    up, with 0.5 s of silence between clips, and is cut at exactly ``duration_s``. The set holds
    ~13 minutes of distinct speech, so hours of it reuse each clip in different neighbourhoods —
    enough for speed and memory measurements, not for accuracy ones. Written in blocks, so
    building 4 hours needs no memory to speak of. Same arguments, same bytes.
    """
    import random
    import subprocess
    import wave

    from trax.media import find_ffmpeg

    tools = find_ffmpeg()
    decoded = []
    for number, clip in enumerate(speech_clips()):
        target = workdir / f"clip{number:03d}.raw"
        if not target.exists():
            subprocess.run([tools.ffmpeg, "-v", "error", "-nostdin", "-y", "-i", str(clip), "-map", "0:a:0",
                            "-ac", "1", "-ar", "16000", "-f", "s16le", str(target)], check=True)
        decoded.append(target)
    pause = b"\0\0" * 8000
    remaining = int(round(duration_s * 16000)) * 2
    rng = random.Random(seed)
    with wave.open(str(destination), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        while remaining > 0:
            order = list(decoded)
            rng.shuffle(order)
            for clip in order:
                for block in (clip.read_bytes(), pause):
                    block = block[:remaining]
                    out.writeframes(block)
                    remaining -= len(block)
                if remaining <= 0:
                    break
    return destination
