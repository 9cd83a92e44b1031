"""Speaker profiles: enrolled voices named in every recording, the same voice linked across recordings.

Three steps, each a rule:

1. **Enrollment** (``enroll_speakers``): a TSV (config ``speakers.profiles``; columns ``name``,
   ``audio``, optional ``start``/``end`` in seconds; paths relative to the TSV) becomes a profile
   store, ``results/speakers/profiles.json``: per person the voice embedding (the speech-weighted
   mean of its clips' embeddings) and per clip its sha256, times, speech seconds and embedding —
   never audio. The embedding comes from the active diarization backend's own model (resemblyzer
   for ``embedded``, the pipeline's embedding model for ``pyannote``), and the store records that
   model's id and weights hash.
2. **Identification** (inside ``merge``): each diarized speaker's embedding, which the diarizer
   keeps in ``diarization.json``, is scored against every profile by cosine similarity. Above
   ``speakers.threshold`` it gets the person's name (``named``) if it also leads the runner-up
   profile by at least ``speakers.ambiguous_margin``; with a closer runner-up the speaker stays
   unnamed (``ambiguous``); below the threshold it is ``unknown``. A store made by another embedding model is an error,
   never a comparison.
3. **Linking** (``link_speakers``): over all recordings of a run, speakers named by a profile share
   the global id ``profile:<name>``; the others are linked by average-linkage clustering of their
   embeddings cut at ``speakers.link_threshold``, and
   a group's id is ``voice:<recording>/<speaker>`` of its first member. The table is
   ``results/speakers.tsv``.

Why unenrolled voices are linked only in ``speakers.tsv``: a global id in ``merged.json`` that
depended on other recordings would make every merge depend on every diarization, so adding one
recording would rerun all merges. ``merged.json`` therefore carries the ids that are a function of
the voice alone — the enrolled profile (``profile:<name>``) — and ``null`` otherwise; to give a
recurring voice a stable id everywhere, enroll it (``speakers.tsv`` names its longest turn).
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trax.io.annotation import round_embedding
from trax.errors import TraxError
from trax.io.jsonio import read_json, write_json_atomic, write_text_atomic
from trax.io.provenance import provenance, sha256_file

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np

log = logging.getLogger(__name__)

#: Decisions of :func:`identify`.
NAMED, UNKNOWN, AMBIGUOUS = "named", "unknown", "ambiguous"
SCORE_DIGITS = 4
#: Columns of an enrollment table (``start``/``end`` optional).
TABLE_COLUMNS = ("name", "audio", "start", "end")


@dataclass(frozen=True)
class SpeakerOptions:
    """The ``speakers`` config section.

    Attributes:
        profiles: The enrollment TSV, or None (no identification; linking still runs).
        threshold: Cosine similarity between a diarized speaker's embedding and a profile above
            which the speaker is that person. Calibrated with ``bench/speakers.py`` on 14 real
            voices (resemblyzer, speech levelled to -20 dBFS), at the default margin, on draws
            that are not the ones reported (``--recordings 20 --seed 1`` to ``--seed 4``): every
            threshold from 0.832 to 0.839 gave the same, best, share of enrolled speech named
            (95.7 / 94.2 / 95.8 / 91.6 %) with unenrolled speech named <= 0.6 % on each; 0.831
            names an unenrolled AMI voice (9.9 % on seed 4), 0.840 leaves an enrolled speaker at
            0.839 unnamed. 0.835 is the middle. Held out (seed 14, ``--seed 99``, ``--seed 7``):
            enrolled speech named 96.8 / 95.0 / 93.4 % (0.845 before: 96.8 / 92.7 / 93.1 %),
            unenrolled named 0.5 / 2.0 / 0.7 % (before 0.5 / 2.0 / 0.6 %). Unenrolled AMI
            voices, which share a room and microphone with the enrolled AMI ones, score up to
            0.851 against them, which ``ambiguous_margin`` handles.
        ambiguous_margin: A speaker above ``threshold`` is named only when its best profile
            leads the runner-up profile by at least this much; otherwise it stays unnamed
            (``ambiguous``): a wrong name is worse than none. The runner-up counts whether or not
            it passes the threshold: recordings made in one room with one microphone score high
            against every profile enrolled there, so an unenrolled person can pass the threshold
            against an enrolled colleague's profile while scoring almost as high against the
            others. 0.07 was chosen with ``bench/speakers.py --seed 99`` and ``--seed 7`` (20
            recordings each, not the default seed-14 bench): unenrolled speech given a name
            7.3 -> 2.5 % and 10.7 -> 2.4 %, enrolled speech named unchanged; 0.02 (the old
            margin, applied only when the runner-up also passed the threshold) to 0.10 measured.
            On the default bench it also leaves unnamed a speaker that the diarizer merged from
            three people (see config/README.md).
        link_threshold: Average cosine similarity above which two unnamed speakers are linked as
            one voice in ``speakers.tsv``. 0.80 had the best pair accuracy in ``bench/speakers.py``
            (98.6 %, precision 100 %; 0.70-0.90 measured); it stays well above the diarizer's own
            cut (similarity 0.65).
        min_speech_s: An enrollment clip with less speech than this (after VAD) is an error: its
            embedding would be noise.
    """

    profiles: str | None = None
    threshold: float = 0.835
    ambiguous_margin: float = 0.07
    link_threshold: float = 0.8
    min_speech_s: float = 1.0

    @classmethod
    def from_config(cls, settings: dict[str, Any]) -> SpeakerOptions:
        return cls(**settings)


# --- enrollment table ----------------------------------------------------------------------------

@dataclass(frozen=True)
class EnrollmentRow:
    """One table row: a clip (or part of one) of one person's voice."""

    row: int
    name: str
    audio: Path
    given: str
    start: float | None
    end: float | None


def _read_table_rows(table: Path) -> list[dict[str, str]]:
    if not table.is_file():
        raise TraxError(table, "enrollment table not found")
    try:
        with open(table, encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle, delimiter="\t")
            columns = [(c or "").strip() for c in reader.fieldnames or []]
            missing = [c for c in ("name", "audio") if c not in columns]
            if missing:
                raise TraxError(table, f"missing column {' and '.join(repr(c) for c in missing)} (a tab-separated "
                                       f"file with columns name, audio[, start, end]; found {columns or 'no header'})")
            unknown = [c for c in columns if c not in TABLE_COLUMNS]
            if unknown:
                raise TraxError(table, f"unknown column {unknown[0]!r} (columns: name, audio[, start, end])")
            return [{(k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None} for raw in reader]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise TraxError(table, f"not a readable TSV ({exc})") from None


def read_enrollment(table: str | os.PathLike[str]) -> list[EnrollmentRow]:
    """Read and check an enrollment TSV; row numbers count the header as row 1.

    Each row is validated against ``workflow/schemas/enrollment.schema.yaml``; the first problem
    stops with one line naming the table and the row.

    Raises:
        TraxError: Missing table or column, no rows, a row that breaks the schema, an audio file
            that does not exist, ``end`` not after ``start``.
    """
    import jsonschema

    from trax.io.schemas import load_schema

    table = Path(table)
    rows = _read_table_rows(table)
    if not rows:
        raise TraxError(table, "enrollment table has no rows")
    validator = jsonschema.Draft202012Validator(load_schema("enrollment"))
    result = []
    for number, row in enumerate(rows, start=2):
        error = next(iter(sorted(validator.iter_errors(row), key=lambda e: list(e.path))), None)
        if error is not None:
            column = error.path[0] if error.path else "row"
            raise TraxError(table, f"row {number}: {column}: {error.message}")
        audio = (table.parent / row["audio"]).resolve()
        if not audio.is_file():
            raise TraxError(table, f"row {number}: audio file not found: {row['audio']}")
        start = float(row["start"]) if row.get("start") else None
        end = float(row["end"]) if row.get("end") else None
        if start is not None and end is not None and end <= start:
            raise TraxError(table, f"row {number}: end {end:g} s is not after start {start:g} s")
        result.append(EnrollmentRow(number, row["name"], audio, row["audio"], start, end))
    return result


def enrollment_audio_files(table: str | os.PathLike[str] | None) -> list[str]:
    """Existing audio files a table names (Snakemake inputs, so a changed clip rebuilds the store);
    [] when the table is missing or unreadable — the job then reports the problem in one line."""
    if not table:
        return []
    try:
        rows = _read_table_rows(Path(table))
    except (TraxError, OSError):
        return []
    base = Path(table).parent
    return sorted({str(base / r["audio"]) for r in rows if r.get("audio") and (base / r["audio"]).is_file()})


# --- embeddings ----------------------------------------------------------------------------------

def load_clip_audio(row: EnrollmentRow, table: Path) -> np.ndarray:
    """Decode a row's clip to 16 kHz mono float32 (Trax's ffmpeg, as normalize does) and cut it."""
    from trax.io.media import decode_clip

    return decode_clip(row.audio, row.start, row.end, table, f"row {row.row}")


def embed_clip(models: Any, audio: np.ndarray, settings: dict[str, Any]) -> tuple[np.ndarray | None, float]:
    """(embedding, speech seconds) of one clip with the diarize backend's own model.

    The embedded backend embeds the clip exactly as it embeds a recording (Silero VAD, then
    windows of ``window_s`` every ``hop_s``) and averages the windows, so a profile and a diarized
    speaker are the same kind of vector. The pyannote backend runs the pipeline's embedding
    model on the whole clip. None when the clip holds no speech.
    """
    import numpy as np

    from trax.diarization.pipeline import DiarizeOptions

    options = DiarizeOptions.from_config(settings)
    if options.backend == "pyannote":
        from trax.diarization.pyannote_backend import embed_pyannote

        return (embed_pyannote(models, audio) if len(audio) else None), len(audio) / 16000
    from trax.diarization.embedded import FRAME, SAMPLE_RATE, embed_speech

    speech = embed_speech(models, audio, options.embedded)
    if speech is None:
        return None, 0.0
    mean = np.asarray(speech.embeddings, dtype=np.float64).mean(axis=0)
    return mean, len(speech.frame_times) * FRAME / SAMPLE_RATE


# --- the profile store ---------------------------------------------------------------------------

@dataclass
class Profile:
    """One enrolled person: their voice (speech-weighted mean of the clips) and the clips used."""

    name: str
    embedding: list[float]
    speech_s: float
    clips: list[dict[str, Any]]

    def serialize(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ProfileStore:
    """``results/speakers/profiles.json`` (``workflow/schemas/profiles.schema.yaml``)."""

    backend: str
    embedding_model: dict[str, Any]
    profiles: list[Profile]
    provenance: dict[str, Any] = field(default_factory=dict)

    def serialize(self) -> dict[str, Any]:
        return {"backend": self.backend, "embedding_model": self.embedding_model,
                "profiles": [p.serialize() for p in self.profiles], "provenance": self.provenance}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProfileStore:
        return cls(data["backend"], data["embedding_model"], [Profile(**p) for p in data["profiles"]],
                   data.get("provenance", {}))

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> ProfileStore:
        from trax.io.schemas import validate

        data = read_json(path)
        try:
            validate(data, "profiles")
        except Exception as exc:  # jsonschema.ValidationError; keep one line
            raise TraxError(path, f"not a profile store ({str(exc).splitlines()[0]})") from None
        return cls.from_dict(data)


def build_store(table: str | os.PathLike[str], settings: dict[str, Any], models: Any,
                options: SpeakerOptions) -> ProfileStore:
    """Embed every row of the enrollment table and average each person's clips.

    Args:
        table: The enrollment TSV.
        settings: The diarize rule settings (backend and its section): the model and, for the
            embedded backend, the VAD/window settings a recording is embedded with.
        models: The backend's loaded models (:func:`trax.diarization.pipeline.load_models`).
        options: The ``speakers`` section (``min_speech_s``).
    """
    import numpy as np

    table = Path(table)
    rows = read_enrollment(table)
    model_id = models.ids.get("embedding")
    if model_id is None:
        raise TraxError(settings.get("backend", "diarize"), "this diarization model has no speaker-embedding model to enroll with")
    people: dict[str, list[dict[str, Any]]] = {}
    sums: dict[str, np.ndarray] = {}
    for row in rows:
        audio = load_clip_audio(row, table)
        vector, speech_s = embed_clip(models, audio, settings)
        if vector is None or speech_s < options.min_speech_s:
            raise TraxError(table, f"row {row.row}: {row.given}: only {speech_s:.2f} s of speech "
                                   f"(at least {options.min_speech_s:g} s needed for a voice profile)")
        unit = np.asarray(round_embedding(vector))
        sums[row.name] = sums.get(row.name, 0) + unit * speech_s
        people.setdefault(row.name, []).append({
            "audio": row.given, "sha256": sha256_file(row.audio), "start": row.start, "end": row.end,
            "speech_s": round(speech_s, 3), "embedding": round_embedding(vector)})
        log.info("enrolled %s: %s (%.1f s of speech)", row.name, row.given, speech_s)
    profiles = [Profile(name, round_embedding(sums[name]), round(sum(c["speech_s"] for c in clips), 3), clips)
                for name, clips in sorted(people.items())]
    return ProfileStore(settings.get("backend", "embedded"), model_id, profiles)


def enroll_file(table_path: str, store_path: str, settings: dict[str, Any], speakers: dict[str, Any],
                remote: Callable[[str, dict[str, Any]], Any] | None = None) -> dict[str, Any]:
    """The ``enroll_speakers`` rule: enrollment TSV -> profile store.

    Args:
        remote: Runs a named request elsewhere (the model server, whose diarizer is the one the
            recordings are diarized with; the rule passes it when the server may read every clip);
            None loads the backend's model in this process. The store is the same either way.
    """
    read_enrollment(table_path)  # a bad table fails before any model loads
    if remote is not None:
        log.info("enrolling %s via the model server", table_path)
        data = remote("enroll", {"table_path": table_path, "settings": settings, "speakers": speakers})
    else:
        from trax.diarization.pipeline import load_job_models

        data = enrollment_store(table_path, settings, speakers, load_job_models(settings))
    write_json_atomic(store_path, data, schema="profiles")
    return data


def enrollment_store(table_path: str, settings: dict[str, Any], speakers: dict[str, Any], models: Any) -> dict[str, Any]:
    """The profile store of an enrollment table, serialized, embedded with the loaded ``models``
    (:func:`trax.diarization.pipeline.load_models`; the model server passes its cached ones)."""
    store = build_store(table_path, settings, models, SpeakerOptions.from_config(speakers))
    store.provenance = provenance({"diarize": settings, "speakers": speakers}, sha256_file(table_path),
                                  models={"embedding": store.embedding_model})
    return store.serialize()


# --- identification ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Identification:
    """How a diarized speaker compares with the profiles.

    Attributes:
        profile: The best-scoring profile's name (also when not ``named``, for review).
        score: Its cosine similarity (4 decimals).
        decision: ``named`` (score >= threshold and the runner-up profile at least the margin
            below), ``ambiguous`` (score >= threshold but the runner-up within the margin) or
            ``unknown`` (score below the threshold).
    """

    profile: str | None
    score: float | None
    decision: str

    def serialize(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def name(self) -> str | None:
        return self.profile if self.decision == NAMED else None


def check_same_model(store: ProfileStore, model: dict[str, Any] | None, store_path: str | os.PathLike[str],
                     subject: str | os.PathLike[str]) -> None:
    """A store is only ever compared with embeddings of the model that made it.

    Raises:
        TraxError: When ``model`` (the diarization's embedding model) differs from the store's.
    """
    if model is None:
        raise TraxError(subject, "has no speaker embeddings to compare with the profiles (diarized by an older "
                                 "Trax or a pipeline without an embedding model)")
    if (model.get("id"), model.get("weights_sha256")) != (store.embedding_model.get("id"),
                                                          store.embedding_model.get("weights_sha256")):
        raise TraxError(store_path, f"profiles were made with {store.embedding_model.get('id')} but {subject} was "
                                    f"diarized with {model.get('id')} (weights "
                                    f"{str(model.get('weights_sha256'))[:12]}…); rebuild the profiles with the same "
                                    f"diarization backend")


def profile_scores(vector: Any, store: ProfileStore) -> list[tuple[float, str]]:
    """(cosine similarity, profile name) of every profile, best first (ties: by name)."""
    import numpy as np

    probe = np.asarray(vector, dtype=np.float64)
    probe = probe / max(float(np.linalg.norm(probe)), 1e-12)
    scores = [(float(np.dot(probe, np.asarray(p.embedding))), p.name) for p in store.profiles]
    return sorted(scores, key=lambda item: (-item[0], item[1]))


def identify(vector: Any, store: ProfileStore, options: SpeakerOptions) -> Identification:
    """Compare one speaker embedding with every profile (see :class:`SpeakerOptions` for the
    threshold and margin)."""
    scores = profile_scores(vector, store)
    if not scores:
        return Identification(None, None, UNKNOWN)
    best, name = scores[0]
    score = round(best, SCORE_DIGITS) + 0.0
    if best < options.threshold:
        return Identification(name, score, UNKNOWN)
    if len(scores) > 1 and best - scores[1][0] < options.ambiguous_margin:
        return Identification(name, score, AMBIGUOUS)
    return Identification(name, score, NAMED)


def profile_global_id(name: str) -> str:
    """The global id of an enrolled person: a function of the voice's profile alone."""
    return f"profile:{name}"


def identify_speakers(speakers: list[dict[str, Any]], diarization: dict[str, Any], store: ProfileStore | None,
                      options: SpeakerOptions, sheet_names: dict[str, str]) -> None:
    """Fill ``name``, ``identification`` and ``global_id`` of merged.json's speakers in place.

    The sample sheet's ``speaker_names`` win over an identified name (the identification is still
    recorded). ``identification`` is None when there is no store or the speaker has no embedding;
    ``global_id`` is ``profile:<name>`` for a speaker named by a profile, else None (see the module
    docstring for why unenrolled voices are linked only in ``speakers.tsv``).
    """
    embeddings = {s["label"]: s["embedding"] for s in diarization.get("speakers", []) if "embedding" in s}
    for speaker in speakers:
        found = None
        if store is not None and speaker.get("label") in embeddings:
            found = identify(embeddings[speaker["label"]], store, options)
        speaker["identification"] = found.serialize() if found else None
        speaker["global_id"] = profile_global_id(found.name) if found and found.name else None
        speaker["name"] = sheet_names.get(speaker["id"]) or (found.name if found else None)


# --- linking across recordings -------------------------------------------------------------------

@dataclass
class Voice:
    """One diarized speaker of one recording, as linking sees it."""

    recording: str
    label: str
    speaker: str
    embedding: list[float]
    speech_s: float
    longest_turn: tuple[float, float]
    identification: Identification | None = None
    global_id: str = ""


def voices_of(diarization: dict[str, Any]) -> list[Voice]:
    """The speakers of one ``diarization.json`` that carry an embedding (``speaker`` is merge's id:
    ``SPEAKER_00`` -> ``SPEAKER_1``, both numbered by first speech)."""
    longest: dict[str, tuple[float, float]] = {}
    for turn in diarization["turns"]:
        span = (turn["start"], turn["end"])
        best = longest.get(turn["speaker"])
        if best is None or span[1] - span[0] > best[1] - best[0]:
            longest[turn["speaker"]] = span
    return [Voice(diarization["sample_id"], s["label"], f"SPEAKER_{index + 1}", s["embedding"], s["speech_s"],
                  longest[s["label"]])
            for index, s in enumerate(diarization["speakers"]) if "embedding" in s]


def link_voices(voices: list[Voice], threshold: float) -> list[int]:
    """Group voices: average linkage on cosine distance (scipy), cut where the mean similarity
    between two groups falls below ``threshold``. Two speakers of one recording may join too: the
    diarizer separates clusters far below the link threshold (``cluster_threshold`` 0.35 =
    similarity 0.65), so two of its speakers that score above it are one voice split in two
    (measured: JFK's speech is split into two or three speakers in most test recordings of
    ``bench/speakers.py``). Memory is one condensed distance matrix (n²/2 doubles: 16 MB at 2000
    speakers). Returns a group index per voice, numbered by first member."""
    import numpy as np
    from scipy.cluster.hierarchy import fcluster, linkage

    if len(voices) < 2:
        return [0] * len(voices)
    vectors = np.array([v.embedding for v in voices], dtype=np.float64)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    labels = fcluster(linkage(vectors, method="average", metric="cosine"), t=1.0 - threshold, criterion="distance")
    first: dict[int, int] = {}
    return [first.setdefault(int(label), len(first)) for label in labels]


def link(voices: list[Voice], store: ProfileStore | None, options: SpeakerOptions) -> list[Voice]:
    """Give every voice a global id: ``profile:<name>`` when a profile names it, else the id of
    its linked group ``voice:<recording>/<speaker>`` (the group's first member in recording
    order). Returns the voices sorted by recording and speaker."""
    voices = sorted(voices, key=_voice_order)
    for voice in voices:
        voice.identification = identify(voice.embedding, store, options) if store is not None else None
    unnamed = [v for v in voices if not (v.identification and v.identification.name)]
    for voice in voices:
        if voice.identification and voice.identification.name:
            voice.global_id = profile_global_id(voice.identification.name)
    groups = link_voices(unnamed, options.link_threshold)
    first: dict[int, Voice] = {}
    for voice, group in zip(unnamed, groups):
        first.setdefault(group, voice)
        voice.global_id = f"voice:{first[group].recording}/{first[group].speaker}"
    return voices


def _voice_order(voice: Voice) -> tuple[str, int, str]:
    """Recordings by id, speakers by number (``SPEAKER_2`` before ``SPEAKER_10``)."""
    digits = "".join(ch for ch in voice.speaker if ch.isdigit())
    return voice.recording, int(digits) if digits else 0, voice.speaker


SPEAKERS_TSV_COLUMNS = ("recording", "speaker", "label", "global_id", "name", "decision", "score", "speech_s",
                        "longest_turn_start", "longest_turn_end")


def speakers_tsv(voices: list[Voice]) -> str:
    """``results/speakers.tsv``: one row per speaker of every recording (see README)."""
    lines = ["\t".join(SPEAKERS_TSV_COLUMNS)]
    for v in voices:
        found = v.identification
        lines.append("\t".join([
            v.recording, v.speaker, v.label, v.global_id, (found.name or "") if found else "",
            found.decision if found else "", f"{found.score:.4f}" if found and found.score is not None else "",
            f"{v.speech_s:.3f}", f"{v.longest_turn[0]:.3f}", f"{v.longest_turn[1]:.3f}"]))
    return "\n".join(lines) + "\n"


def link_files(diarizations: list[str], output_path: str, settings: dict[str, Any],
               store_path: str | None = None) -> list[Voice]:
    """The ``link_speakers`` rule: every ``diarization.json`` (+ the profile store) -> speakers.tsv.

    Raises:
        TraxError: When the store and a diarization come from different embedding models.
    """
    options = SpeakerOptions.from_config(settings)
    store = ProfileStore.read(store_path) if store_path else None
    voices: list[Voice] = []
    model = None
    for path in sorted(diarizations):
        data = read_json(path)
        if data["speakers"] and data.get("embedding_model") is not None:
            if store is not None:
                check_same_model(store, data.get("embedding_model"), store_path, path)
            if model is not None and data["embedding_model"] != model:
                raise TraxError(path, f"diarized with {data['embedding_model'].get('id')}, other recordings with "
                                      f"{model.get('id')}: their voices cannot be linked")
            model = data["embedding_model"]
        voices += voices_of(data)
    linked = link(voices, store, options)
    write_text_atomic(output_path, speakers_tsv(linked))
    return linked

