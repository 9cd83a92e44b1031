"""Speaker-attributed transcript: give every word a speaker from the diarization turns.

``transcript.refined.json`` (or any transcript with timed words) + ``diarization.rttm`` →
``merged.json``. Each word gets the speaker whose turns overlap it longest; a word that falls in no
turn takes the nearest turn within ``nearest_tolerance_s``, else the speaker ``unknown``. Every word
records how it was assigned (``overlap`` / ``nearest`` / ``unassigned``) and whether it lies in
overlapped speech (two or more speakers talking at once) — both keys are always present. Words are
grouped into utterances that break where the speaker changes and at pauses longer than
``max_pause_s``.

Speaker labels are the readable ``SPEAKER_1``, ``SPEAKER_2``, … numbered in order of first speech
(first turn in the diarization), whatever labels the diarization backend used; the backend label
is kept in ``speakers[].label``. A sample sheet column ``speaker_names``
(``SPEAKER_1=Alice;SPEAKER_2=Bob``) gives them names.
"""

from __future__ import annotations

import bisect
import itertools
import re
from array import array
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from trax.io.annotation import Turn, rttm_turns
from trax.errors import TraxError
from trax.io.jsonio import iter_json_list, read_json_head, write_json_streamed
from trax.io.languages import word_separator
from trax.io.provenance import provenance, sha256_file

#: Times are kept to the millisecond, confidences to 4 digits (as in transcripts).
TIME_DIGITS = 3
PROB_DIGITS = 4
UNKNOWN = "unknown"
_NAME_ITEM = re.compile(r"^\s*(SPEAKER_[1-9][0-9]*)\s*=\s*([^;=]*?)\s*$")


@dataclass(frozen=True)
class MergeOptions:
    """The ``merge`` config section.

    Attributes:
        nearest_tolerance_s: A word overlapping no turn takes the nearest turn when the gap between
            them is at most this long; otherwise it is ``unknown``. 0.5 s covers the usual slack
            between Whisper's word edges and a diarizer's speech edges (both are ±0.2–0.3 s) without
            bridging a real pause.
        max_pause_s: A silence between two words longer than this starts a new utterance even when
            the speaker stays the same (1.0 s: about a sentence break in conversation).
        min_overlap_s: A word counts as overlapped speech when at least this much of it lies where
            two or more speakers are active at once (10 ms: anything measurable at RTTM's precision).
    """

    nearest_tolerance_s: float = 0.5
    max_pause_s: float = 1.0
    min_overlap_s: float = 0.01

    @classmethod
    def from_config(cls, settings: dict[str, Any]) -> MergeOptions:
        """Build options from the config section (unknown keys were rejected by the schema)."""
        return cls(**settings)


def parse_speaker_names(value: str | None, subject: str = "speaker_names") -> dict[str, str]:
    """Parse ``SPEAKER_1=Alice;SPEAKER_2=Bob`` into ``{"SPEAKER_1": "Alice", ...}``.

    Raises:
        TraxError: when an item is not ``SPEAKER_<n>=<name>`` or a label appears twice.
    """
    names: dict[str, str] = {}
    if not value or not str(value).strip():
        return names
    for item in str(value).split(";"):
        if not item.strip():
            continue
        match = _NAME_ITEM.match(item)
        if not match or not match.group(2):
            raise TraxError(subject, f"'{item.strip()}' is not SPEAKER_<n>=<name> (e.g. SPEAKER_1=Alice;SPEAKER_2=Bob)")
        if match.group(1) in names:
            raise TraxError(subject, f"{match.group(1)} is named twice")
        names[match.group(1)] = match.group(2)
    return names


def _overlap(a_start: float, a_end: float, b_start: float, b_end: float) -> float:
    return max(0.0, min(a_end, b_end) - max(a_start, b_start))


def _gap(a_start: float, a_end: float, b_start: float, b_end: float) -> float:
    return max(0.0, b_start - a_end, a_start - b_end)


def overlap_regions(turns: list[Turn]) -> list[tuple[float, float]]:
    """Time regions where two or more *different* speakers are active, merged and sorted."""
    events = sorted([(t.start, 1, t.speaker) for t in turns] + [(t.end, -1, t.speaker) for t in turns],
                    key=lambda e: (e[0], e[1]))
    active: dict[str, int] = defaultdict(int)
    regions: list[tuple[float, float]] = []
    region_start = None
    for time, delta, label in events:
        active[label] += delta
        speaking = sum(1 for count in active.values() if count > 0)
        if speaking >= 2 and region_start is None:
            region_start = time
        elif speaking < 2 and region_start is not None:
            if time > region_start:
                regions.append((region_start, time))
            region_start = None
    return regions


class IntervalIndex:
    """Finds the intervals that can touch a time span without scanning all of them, so merging
    is linear in words (it was words x turns: 2.4 s at 1 hour against 0.27 s at 10 minutes).

    Intervals sorted by start are cut to those with ``start <= hi`` (bisect on starts) and, via a
    running maximum of ends, those with ``end >= lo``; what lies between keeps its order, so every
    caller sees the same candidates in the same order as a full scan, minus ones that cannot touch
    the span. Unsorted input falls back to a full scan.
    """

    def __init__(self, intervals: list[tuple[float, float]]) -> None:
        self.sorted = all(a[0] <= b[0] for a, b in zip(intervals, intervals[1:]))
        self.starts = [start for start, _ in intervals]
        self.max_ends = list(itertools.accumulate((end for _, end in intervals), max))

    def between(self, lo: float, hi: float) -> range:
        """Indices of the intervals that may satisfy ``start <= hi`` and ``end >= lo``."""
        if not self.sorted:
            return range(len(self.starts))
        return range(bisect.bisect_left(self.max_ends, lo), bisect.bisect_right(self.starts, hi))


def assign_word(start: float, end: float, turns: list[Turn], options: MergeOptions,
                index: IntervalIndex | None = None) -> tuple[str | None, str]:
    """The backend label for one word and how it was chosen (``overlap``/``nearest``/``unassigned``).

    Overlap is summed per speaker over all their turns; ties go to the speaker whose overlapping
    turn starts first (turns are sorted), so the choice is deterministic. A zero-length word is
    treated as the point ``start``: it overlaps a turn that contains it. ``index`` (of ``turns``)
    limits the search to turns within ``nearest_tolerance_s`` of the word; the result is the same.
    """
    if index is not None:
        tolerance = max(options.nearest_tolerance_s, 0.0)
        turns = [turns[i] for i in index.between(start - tolerance, max(start, end) + tolerance)]
    per_label: dict[str, float] = {}
    for turn in turns:
        if end > start:
            amount = _overlap(start, end, turn.start, turn.end)
        else:
            amount = 1e-9 if turn.start <= start <= turn.end else 0.0
        if amount > 0:
            per_label[turn.speaker] = per_label.get(turn.speaker, 0.0) + amount
    if per_label:
        best = max(per_label.values())
        # dicts keep insertion order = turn order, so the first maximal label wins.
        return next(label for label, amount in per_label.items() if amount == best), "overlap"
    nearest = None
    for turn in turns:
        gap = _gap(start, end, turn.start, turn.end)
        if gap <= options.nearest_tolerance_s and (nearest is None or gap < nearest[0]):
            nearest = (gap, turn.speaker)
    if nearest is not None:
        return nearest[1], "nearest"
    return None, "unassigned"


def _raw_words(segments: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    """The transcript's non-empty words, in order (what merge keeps)."""
    for segment in segments:
        yield from (w for w in segment.get("words", []) if w.get("word", "").strip())


def speaker_ids(turns: list[Turn]) -> dict[str, str]:
    """Backend label -> readable ``SPEAKER_<n>``, numbered in order of first speech."""
    readable: dict[str, str] = {}
    for turn in turns:  # sorted by start: numbering follows first speech
        readable.setdefault(turn.speaker, f"SPEAKER_{len(readable) + 1}")
    return readable


class _WordAssigner:
    """Gives transcript words their speaker, assignment and overlap flag (``merged.json`` words)."""

    def __init__(self, turns: list[Turn], options: MergeOptions) -> None:
        self.turns = turns
        self.options = options
        self.readable = speaker_ids(turns)
        self.regions = overlap_regions(turns)
        self.turn_index = IntervalIndex([(t.start, t.end) for t in turns])
        self.region_index = IntervalIndex(self.regions)

    def __call__(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        start, end = float(raw["start"]), float(raw["end"])
        label, how = assign_word(start, end, self.turns, self.options, self.turn_index)
        near = [self.regions[i] for i in self.region_index.between(start, max(start, end))]
        in_overlap = sum(_overlap(start, end, a, b) for a, b in near)
        return {
            "start": round(start, TIME_DIGITS),
            "end": round(end, TIME_DIGITS),
            "word": raw["word"].strip(),
            "probability": round(float(raw["probability"]), PROB_DIGITS),
            "speaker": self.readable[label] if label is not None else UNKNOWN,
            "assignment": how,
            "overlapped": bool(in_overlap >= self.options.min_overlap_s
                               or (end <= start and any(a <= start <= b for a, b in near))),
        }


def group_utterances(words: Iterable[tuple[dict[str, Any], Any]], max_pause_s: float, language: str | None = None
                     ) -> Iterator[tuple[dict[str, Any], list[Any]]]:
    """Group merged words (each with a companion value, e.g. its expected errors) into utterances
    that break where the speaker changes and at pauses over ``max_pause_s``; yields each finished
    utterance with its words' companions. Its text joins the words as ``language`` writes them
    (no spaces for Chinese, Japanese, Thai…: :func:`trax.io.languages.word_separator`)."""
    separator = word_separator(language)
    utterance: dict[str, Any] | None = None
    companions: list[Any] = []
    count = 0
    for word, companion in words:
        if (utterance is None or utterance["speaker"] != word["speaker"]
                or word["start"] - utterance["words"][-1]["end"] > max_pause_s):
            if utterance is not None:
                yield _finished(utterance, separator), companions
            utterance, companions = {"id": count, "speaker": word["speaker"], "words": []}, []
            count += 1
        utterance["words"].append(word)
        companions.append(companion)
    if utterance is not None:
        yield _finished(utterance, separator), companions


def _finished(utterance: dict[str, Any], separator: str = " ") -> dict[str, Any]:
    words = utterance["words"]
    utterance["start"] = words[0]["start"]
    utterance["end"] = max(w["end"] for w in words)
    utterance["text"] = separator.join(w["word"] for w in words)
    return utterance


@dataclass
class _SpeakerTally:
    words: int = 0
    utterances: int = 0
    #: Per utterance / per word, in order: summed at the end exactly as a list would be.
    speech: array = field(default_factory=lambda: array("d"))
    probabilities: array = field(default_factory=lambda: array("d"))


class MergeTally:
    """Totals over the utterances of a merge, kept as they stream past (a few numbers per word),
    so ``speakers`` and ``stats`` need no utterance held in memory."""

    def __init__(self) -> None:
        self.by_speaker: dict[str, _SpeakerTally] = defaultdict(_SpeakerTally)
        self.words = 0
        self.utterances = 0
        self.overlapped = 0
        self.assignment = {how: 0 for how in ("overlap", "nearest", "unassigned")}

    def add(self, utterance: dict[str, Any]) -> None:
        tally = self.by_speaker[utterance["speaker"]]
        tally.utterances += 1
        tally.speech.append(utterance["end"] - utterance["start"])
        self.utterances += 1
        for word in utterance["words"]:
            tally.words += 1
            tally.probabilities.append(word["probability"])
            self.words += 1
            self.overlapped += word["overlapped"]
            self.assignment[word["assignment"]] += 1

    def speakers(self, turns: list[Turn], speaker_names: dict[str, str]) -> list[dict[str, Any]]:
        """``merged.json`` speakers: in order of first speech, ``unknown`` last when it has words."""
        entries = [(speaker, label) for label, speaker in speaker_ids(turns).items()]
        if self.by_speaker.get(UNKNOWN, _SpeakerTally()).words:
            entries.append((UNKNOWN, None))
        speakers = []
        for speaker, label in entries:
            tally = self.by_speaker.get(speaker, _SpeakerTally())
            speakers.append({
                "id": speaker,
                "label": label,
                "name": speaker_names.get(speaker),
                "diarized_s": round(_union_length([(t.start, t.end) for t in turns if t.speaker == label]),
                                    TIME_DIGITS),
                "speech_s": round(sum(tally.speech), TIME_DIGITS),
                "words": tally.words,
                "utterances": tally.utterances,
                "mean_confidence": (round(sum(tally.probabilities) / len(tally.probabilities), PROB_DIGITS)
                                    if tally.probabilities else None),
            })
        return speakers

    def stats(self, turns: list[Turn]) -> dict[str, Any]:
        return {"words": self.words, "utterances": self.utterances, "assignment": dict(self.assignment),
                "overlapped_words": self.overlapped, "turns": len(turns)}


def merged_utterances(words: Iterable[tuple[Mapping[str, Any], Any]], turns: list[Turn], options: MergeOptions,
                      tally: MergeTally, annotate: Callable[[dict[str, Any], list[Any]], None] | None = None,
                      language: str | None = None) -> Iterator[dict[str, Any]]:
    """The utterances of ``merged.json``, one at a time, counted into ``tally`` as they pass.

    Args:
        words: Every non-empty transcript word, in order, each with a companion value passed on to
            ``annotate`` (its expected errors: :func:`trax.quality.estimates.word_errors`; or None).
        turns: The diarization's turns, sorted by start.
        options: Merge settings.
        tally: Receives every utterance (speaker totals, stats).
        annotate: Called with each utterance and its words' companions before it is counted (the
            quality fields).
        language: The transcript's language (how its words are joined).
    """
    assign = _WordAssigner(turns, options)
    assigned = ((assign(raw), value) for raw, value in words)
    for utterance, values in group_utterances(assigned, options.max_pause_s, language):
        if annotate is not None:
            annotate(utterance, values)
        tally.add(utterance)
        yield utterance


def _head(transcript: Mapping[str, Any], turns: list[Turn], tally: MergeTally,
          speaker_names: dict[str, str]) -> dict[str, Any]:
    return {
        "sample_id": transcript.get("sample_id", ""),
        "language": transcript.get("language", ""),
        "duration": transcript.get("duration", 0.0),
        "domain": _domain(transcript),
        "speakers": tally.speakers(turns, speaker_names),
        "stats": tally.stats(turns),
    }


def merge(transcript: dict[str, Any], turns: list[Turn], options: MergeOptions,
          speaker_names: dict[str, str] | None = None) -> dict[str, Any]:
    """Build the body of ``merged.json`` in memory (everything but quality and provenance)."""
    tally = MergeTally()
    words = ((raw, None) for raw in _raw_words(transcript.get("segments", [])))
    utterances = list(merged_utterances(words, turns, options, tally, language=transcript.get("language")))
    return {**_head(transcript, turns, tally, speaker_names or {}), "utterances": utterances}


def _domain(transcript: Mapping[str, Any]) -> dict[str, Any] | None:
    domain = transcript.get("domain")
    if not isinstance(domain, dict) or not domain.get("name"):
        return None
    return {"name": domain["name"], "glossary": domain.get("glossary") or {}}


def _union_length(intervals: list[tuple[float, float]]) -> float:
    total, current = 0.0, None
    for start, end in sorted(intervals):
        if current is None or start > current[1]:
            if current is not None:
                total += current[1] - current[0]
            current = [start, end]
        else:
            current[1] = max(current[1], end)
    if current is not None:
        total += current[1] - current[0]
    return total


def display_name(merged: dict[str, Any], speaker: str) -> str:
    """The name to show for a speaker id: its ``name`` (the sample sheet's, else the enrolled
    profile that identified it), else the id."""
    for entry in merged.get("speakers", []):
        if entry["id"] == speaker and entry.get("name"):
            return entry["name"]
    return speaker


#: The one speaker of a recording that was not diarized (``diarize.enabled: false``).
UNDIARIZED_LABEL = "SPEAKER_00"


def merge_files(transcript_path: str, rttm_path: str | None, output_path: str, settings: dict[str, Any],
                speaker_names: str | None = None, diarization_path: str | None = None,
                profiles_path: str | None = None, speaker_settings: dict[str, Any] | None = None,
                quality: dict[str, Any] | None = None) -> None:
    """The ``merge`` rule: write ``merged.json`` from a transcript and an RTTM.

    Args:
        transcript_path: ``transcript.refined.json`` (any Trax transcript with words works).
        rttm_path: ``diarization.rttm``, or None when diarization is off (``diarize.enabled:
            false``): then one speaker speaks the whole recording, and provenance says
            ``diarization: disabled``.
        output_path: Destination ``merged.json``.
        settings: The ``merge`` config section (recorded in provenance).
        speaker_names: The sample sheet's ``speaker_names`` cell, or None.
        diarization_path: ``diarization.json`` (its speaker embeddings), or None; needed with a
            profile store.
        profiles_path: The profile store (``results/speakers/profiles.json``), or None: then no
            speaker is identified (``identification`` and ``global_id`` are null).
        speaker_settings: The ``speakers`` config section (threshold, margin).
        quality: The ``quality`` config section (review thresholds; defaults when None). The
            quality fields (:func:`trax.quality.estimates.annotate_utterance`, :func:`trax.quality.estimates.add_quality`)
            are added either way.
    """
    from trax.quality.estimates import (
        QualityOptions,
        WordCoverage,
        add_quality,
        annotate_utterance,
        asr_model_for,
        load_model,
        merged_diarization,
        refinement_changes,
        speech_share,
        word_errors,
    )
    from trax.diarization.speakers import ProfileStore, SpeakerOptions, check_same_model, identify_speakers

    # Read and written one utterance at a time: this runs in the Snakemake process, which must not
    # grow with the recording (a 4-hour transcript is ~20 MB of Python objects; trax.io.jsonio).
    transcript = read_json_head(transcript_path, {"segments"})
    if rttm_path is None:
        turns = [Turn(0.0, float(transcript["duration"]), UNDIARIZED_LABEL)] if transcript["duration"] > 0 else []
        diarization = {"diarization": "disabled"}
    else:
        turns = rttm_turns(rttm_path)
        diarization = {"diarization_sha256": sha256_file(rttm_path)}
    names = parse_speaker_names(speaker_names, subject=f"sample sheet speaker_names '{speaker_names}'")
    options = MergeOptions.from_config(settings)
    voices = read_json_head(diarization_path, {"turns"}) if diarization_path else {}
    store = ProfileStore.read(profiles_path) if profiles_path else None
    if store is not None and voices.get("speakers"):
        check_same_model(store, voices.get("embedding_model"), profiles_path, diarization_path)
    speaker_options = SpeakerOptions.from_config(speaker_settings or {})
    quality_options = QualityOptions.from_config(quality)
    # A refined transcript where combine mode ran gets the word model that uses the two decoders'
    # agreement; every other transcript the word-probability one (quality.model.asr_part says which).
    model = asr_model_for(load_model(), transcript)
    errors = array("d")
    flagged = 0
    # The transcript cross-checks the diarization: words outside every diarized turn.
    coverage = WordCoverage.of_turns(turns) if rttm_path is not None else None

    calibrated = model.calibrated_for(transcript.get("language"))

    def annotate(utterance: dict[str, Any], own_errors: list[float]) -> None:
        nonlocal flagged
        annotate_utterance(utterance, own_errors, quality_options, calibrated)
        errors.extend(own_errors)
        flagged += utterance["needs_review"]
        if coverage is not None:
            coverage.add_words(utterance["words"])

    tally = MergeTally()
    words = word_errors(iter_json_list(transcript_path, "segments"), model, refinement_changes(transcript))
    utterances = merged_utterances(words, turns, options, tally, annotate, language=transcript.get("language"))

    def head() -> dict[str, Any]:
        body = _head(transcript, turns, tally, names)
        identify_speakers(body["speakers"], voices, store, speaker_options, names)
        share = speech_share(turns, float(transcript["duration"])) if coverage is not None else None
        add_quality(body, errors, flagged, merged_diarization(coverage, share, model), quality_options, model,
                    transcript.get("language_detection"))
        if store is not None:
            diarization["profiles_sha256"] = sha256_file(profiles_path)
        body["provenance"] = provenance(
            {**asdict(options), "speaker_names": names, "quality": asdict(quality_options),
             **({"speakers": asdict(speaker_options)} if store is not None else {})},
            sha256_file(transcript_path),
            models=transcript.get("provenance", {}).get("models", {}),
            quality_model=model.provenance(),
            **diarization,
        )
        return body

    write_json_streamed(output_path, "utterances", utterances, head, schema="merged",
                        item_schema="merged.schema.yaml#/properties/utterances/items")
