"""A reviewer's corrections (``corrections.json``, saved from ``review.html``) applied to ``merged.json``.

Rule ``correct`` writes ``merged.corrected.json`` (the same schema as ``merged.json``, with what
changed marked: ``corrected``/``original`` on words, ``corrected``/``reviewed``/``speaker_was`` on
utterances and a ``corrections`` summary) and the corrected SRT/VTT/TXT/MD through
:mod:`trax.transcript.exports`; ``merged.json`` and its exports stay as they are.

Every edit names what it changes as it was (an utterance's times and speaker, a word's times and
text), and all of them are checked against ``merged.json`` before anything is written: corrections
that do not fit (another recording, an unknown utterance or speaker, times or words that differ)
are one :class:`~trax.errors.TraxError` line naming the corrections file, and nothing is applied.
The format is ``workflow/schemas/corrections.schema.yaml``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from trax.errors import TraxError
from trax.io.jsonio import iter_json_list, read_json_head, write_json_streamed
from trax.io.provenance import sha256_file
from trax.transcript.exports import export_files
from trax.transcript.merge import PROB_DIGITS, TIME_DIGITS, MergeTally

#: Largest difference (s) between a time in corrections.json and merged.json that still matches:
#: both are written with millisecond precision, so anything over half a millisecond is another time.
TIME_TOLERANCE_S = 0.0005
#: Probability given to words a person typed in place of an utterance's words (the count changed,
#: so no recognizer word stands behind them).
TYPED_PROBABILITY = 1.0
#: Order of an utterance's ``corrected`` list.
CHANGES = ("speaker", "text", "words")


@dataclass
class Corrections:
    """A checked ``corrections.json``: renames by speaker id and edits by utterance id."""

    path: str
    sha256: str
    renames: dict[str, str] = field(default_factory=dict)
    edits: dict[int, dict[str, Any]] = field(default_factory=dict)


def _fail(path: str, reason: str) -> TraxError:
    return TraxError(path, reason)


def load_corrections(path: str) -> dict[str, Any]:
    """Read and validate ``corrections.json`` (one-line :class:`TraxError` when it is not valid)."""
    import jsonschema

    from trax.io.schemas import validate

    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(path, f"cannot read corrections: {' '.join(str(exc).split())}") from None
    try:
        validate(data, "corrections")
    except jsonschema.ValidationError as exc:
        where = "/".join(str(part) for part in exc.absolute_path) or "the document"
        raise _fail(path, f"not a corrections file (corrections.schema.yaml): at {where}: "
                          f"{' '.join(exc.message.split())[:200]}") from None
    return data


def _same_time(a: float, b: float) -> bool:
    return abs(float(a) - float(b)) <= TIME_TOLERANCE_S


def check_corrections(path: str, merged_path: str) -> Corrections:
    """Check every edit of ``path`` against ``merged_path`` (read one utterance at a time).

    Raises:
        TraxError: ``<path>: <the first problem>``: another recording's sha256, an unknown speaker
            or utterance, a speaker, time or word that differs from ``merged.json``, a word index out
            of range, an utterance edited twice, or both its text and its words edited.
    """
    data = load_corrections(path)
    head = read_json_head(merged_path, {"utterances"})
    expected = head["provenance"]["input_sha256"]
    if data["input_sha256"] != expected:
        raise _fail(path, f"made for another recording: input_sha256 {data['input_sha256'][:12]}… but "
                          f"{merged_path} is of {expected[:12]}… ({head['sample_id']})")
    known = {speaker["id"] for speaker in head["speakers"]}
    result = Corrections(path=path, sha256=sha256_file(path))
    for rename in data["speakers"]:
        if rename["id"] not in known:
            raise _fail(path, f"unknown speaker '{rename['id']}' (known: {', '.join(sorted(known))})")
        if rename["id"] in result.renames:
            raise _fail(path, f"speaker '{rename['id']}' is renamed twice")
        result.renames[rename["id"]] = rename["name"].strip()
    duration = float(head["duration"])
    for edit in data["utterances"]:
        where = f"utterance {edit['id']}"
        if edit["id"] in result.edits:
            raise _fail(path, f"{where} is corrected twice")
        if edit["start"] > edit["end"] or edit["end"] > duration + TIME_TOLERANCE_S:
            raise _fail(path, f"{where}: bad times {edit['start']}-{edit['end']} (the recording lasts {duration} s)")
        if edit.get("speaker") is not None and edit["speaker"] not in known:
            raise _fail(path, f"{where}: unknown speaker '{edit['speaker']}' (known: {', '.join(sorted(known))})")
        if "text" in edit and edit.get("words"):
            raise _fail(path, f"{where}: edits both its text and single words (the text replaces the words)")
        result.edits[edit["id"]] = edit
    seen = set()
    for utterance in iter_json_list(merged_path, "utterances"):
        edit = result.edits.get(utterance["id"])
        if edit is None:
            continue
        seen.add(utterance["id"])
        _check_utterance(path, edit, utterance)
    missing = sorted(set(result.edits) - seen)
    if missing:
        raise _fail(path, f"unknown utterance {missing[0]} (not in {merged_path})")
    return result


def _check_utterance(path: str, edit: Mapping[str, Any], utterance: Mapping[str, Any]) -> None:
    where = f"utterance {edit['id']}"
    if not (_same_time(edit["start"], utterance["start"]) and _same_time(edit["end"], utterance["end"])):
        raise _fail(path, f"{where}: times {edit['start']}-{edit['end']} do not match merged.json's "
                          f"{utterance['start']}-{utterance['end']} (corrections of another version of the transcript?)")
    if edit["speaker_was"] != utterance["speaker"]:
        raise _fail(path, f"{where}: speaker_was '{edit['speaker_was']}' but merged.json has '{utterance['speaker']}'")
    words = utterance["words"]
    indices = set()
    for word in edit.get("words", []):
        index = word["index"]
        if index >= len(words) or index in indices:
            raise _fail(path, f"{where}: word {index} " + ("is corrected twice" if index in indices
                                                           else f"does not exist (it has {len(words)} words)"))
        indices.add(index)
        original = words[index]
        if not (_same_time(word["start"], original["start"]) and _same_time(word["end"], original["end"])):
            raise _fail(path, f"{where}: word {index} times {word['start']}-{word['end']} do not match merged.json's "
                              f"{original['start']}-{original['end']}")
        if word["was"] != original["word"]:
            raise _fail(path, f"{where}: word {index} was '{word['was']}' but merged.json has '{original['word']}'")


def _typed_words(utterance: Mapping[str, Any], tokens: list[str]) -> list[dict[str, Any]]:
    """Words for a retyped utterance whose word count changed: spread over its time in proportion
    to their lengths (plus one for the space), so subtitles still follow the speech roughly."""
    start, end = float(utterance["start"]), float(utterance["end"])
    first = utterance["words"][0]
    overlapped = any(word["overlapped"] for word in utterance["words"])
    total = sum(len(token) + 1 for token in tokens)
    words, at = [], start
    for index, token in enumerate(tokens):
        stop = end if index == len(tokens) - 1 else at + (end - start) * (len(token) + 1) / total
        words.append({"start": round(at, TIME_DIGITS), "end": round(stop, TIME_DIGITS), "word": token,
                      "probability": round(TYPED_PROBABILITY, PROB_DIGITS), "speaker": utterance["speaker"],
                      "assignment": first["assignment"], "overlapped": overlapped, "corrected": True, "original": None})
        at = stop
    return words


def _replaced(word: dict[str, Any], text: str) -> dict[str, Any]:
    if text == word["word"]:
        return word
    return {**word, "word": text, "corrected": True, "original": word["word"]}


def apply_edit(utterance: dict[str, Any], edit: Mapping[str, Any] | None) -> dict[str, Any]:
    """One utterance with its (checked) edit applied; unedited utterances come back unchanged."""
    if edit is None:
        return utterance
    changes = set()
    utterance = dict(utterance)
    if edit.get("speaker") and edit["speaker"] != utterance["speaker"]:
        utterance["speaker_was"] = utterance["speaker"]
        utterance["speaker"] = edit["speaker"]
        utterance["words"] = [{**word, "speaker": edit["speaker"]} for word in utterance["words"]]
        changes.add("speaker")
    if "text" in edit:
        tokens = edit["text"].split()
        if len(tokens) == len(utterance["words"]):
            words = [_replaced(word, token) for word, token in zip(utterance["words"], tokens)]
        else:
            words = _typed_words(utterance, tokens)
        if words != utterance["words"]:
            utterance["words"] = words
            changes.add("text")
    replacements = {word["index"]: word["word"].strip() for word in edit.get("words", [])}
    if replacements:
        utterance["words"] = [_replaced(word, replacements.get(index, word["word"]))
                              for index, word in enumerate(utterance["words"])]
        changes.add("words")
    utterance["text"] = " ".join(word["word"] for word in utterance["words"])
    if edit.get("reviewed"):
        utterance["reviewed"] = True
    if changes:
        utterance["corrected"] = [change for change in CHANGES if change in changes]
    return utterance


def _corrected_utterances(merged_path: str, corrections: Corrections, tally: MergeTally,
                          counts: dict[str, int]) -> Iterator[dict[str, Any]]:
    for utterance in iter_json_list(merged_path, "utterances"):
        edited = apply_edit(utterance, corrections.edits.get(utterance["id"]))
        changes = edited.get("corrected", [])
        counts["utterances_moved"] += "speaker" in changes
        counts["utterances_retyped"] += "text" in changes
        counts["words_changed"] += sum(bool(word.get("corrected")) for word in edited["words"])
        counts["utterances_reviewed"] += bool(edited.get("reviewed"))
        tally.add(edited)
        yield edited


def correct_files(merged_path: str, corrections_path: str, output_path: str, exports: Mapping[str, str],
                  export_settings: Mapping[str, Any]) -> None:
    """The ``correct`` rule: ``merged.json`` + ``corrections.json`` → ``merged.corrected.json`` and
    the corrected exports (``exports``: format → path, as :func:`trax.transcript.exports.export_files`).

    Speaker totals (words, utterances, speech, mean confidence) and the word counts of ``stats`` are
    recounted, since moved or retyped utterances change them; quality estimates stay the model's.
    """
    corrections = check_corrections(corrections_path, merged_path)
    head = read_json_head(merged_path, {"utterances"})
    tally = MergeTally()
    counts = {"utterances_moved": 0, "utterances_retyped": 0, "words_changed": 0, "utterances_reviewed": 0}

    def corrected_head() -> dict[str, Any]:
        speakers = []
        for speaker in head["speakers"]:
            own = tally.by_speaker.get(speaker["id"])
            probabilities = own.probabilities if own else []
            speakers.append({
                **speaker,
                "name": corrections.renames.get(speaker["id"], speaker["name"]),
                "speech_s": round(sum(own.speech), TIME_DIGITS) if own else 0.0,
                "words": own.words if own else 0,
                "utterances": own.utterances if own else 0,
                "mean_confidence": (round(sum(probabilities) / len(probabilities), PROB_DIGITS)
                                    if probabilities else None),
            })
        stats = {**head["stats"], "words": tally.words, "utterances": tally.utterances,
                 "assignment": dict(tally.assignment), "overlapped_words": tally.overlapped}
        summary = {"sha256": corrections.sha256, "merged_sha256": sha256_file(merged_path),
                   "speakers_renamed": len(corrections.renames), **counts}
        return {**head, "speakers": speakers, "stats": stats, "corrections": summary}

    write_json_streamed(output_path, "utterances", _corrected_utterances(merged_path, corrections, tally, counts),
                        head=corrected_head, schema="merged", item_schema="merged.schema.yaml#/properties/utterances/items")
    export_files(output_path, dict(exports), dict(export_settings))
