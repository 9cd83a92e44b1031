"""Scoring helpers shared by the tests, the benchmarks and (later) the evaluate rule."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jiwer

from trax.io.languages import CER_LANGUAGES


@functools.cache
def _english_normalizer():  # -> whisper_normalizer.english.EnglishTextNormalizer
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


def _is_number(token: str) -> bool:
    return token.isascii() and token.isdigit()


def join_digit_runs(tokens: Sequence[str]) -> list[str]:
    """Consecutive all-digit tokens joined into one, as Whisper's normalizer joins spelled numbers.

    The normalizer turns a run of number words into one number ("five five" -> "55", "nineteen
    ninety" -> "1990") but leaves a run of numbers already written in digits apart ("5 5"), so a
    correct "5 5" for a spoken "five five" would count a substitution and an insertion. Joining
    digit runs on both sides compares the two forms alike.
    """
    joined: list[str] = []
    for token in tokens:
        if joined and _is_number(token) and _is_number(joined[-1]):
            joined[-1] += token
        else:
            joined.append(token)
    return joined


@functools.cache
def _basic_normalizer():  # -> whisper_normalizer.basic.BasicTextNormalizer
    from whisper_normalizer.basic import BasicTextNormalizer

    return BasicTextNormalizer()


def normalize_text(text: str, language: str | None = None) -> str:
    """Text as scored: tokens separated by single spaces.

    English (``language`` None or ``en``): Whisper's English normalizer (case, punctuation,
    spelling variants, numbers), with runs of numbers joined (:func:`join_digit_runs`). Any other
    language: Whisper's basic normalizer (case and punctuation; letters with diacritics kept), as
    Whisper's own multilingual evaluation does. Languages written without spaces (and Korean,
    :data:`trax.io.languages.CER_LANGUAGES`) are scored by character: every character is a token,
    so the "WER" of such text is its character error rate.
    """
    if language in (None, "en"):
        return " ".join(join_digit_runs(_english_normalizer()(text).split()))
    normalized = _basic_normalizer()(text)
    if language in CER_LANGUAGES:
        return " ".join(char for char in normalized if not char.isspace())
    return " ".join(normalized.split())


def error_unit(language: str | None) -> str:
    """``character`` for languages scored by CER, else ``word``."""
    return "character" if language in CER_LANGUAGES else "word"


@dataclass(frozen=True)
class WerResult:
    """Corpus-level word error counts (errors are summed over items before dividing)."""

    wer: float
    substitutions: int
    deletions: int
    insertions: int
    reference_words: int


def corpus_wer(references: Sequence[str], hypotheses: Sequence[str], language: str | None = None) -> WerResult:
    """WER over all items together, both sides normalized with :func:`normalize_text`.

    Items whose normalized reference is empty are skipped (WER is undefined for them).
    """
    pairs = [(normalize_text(r, language), normalize_text(h, language))
             for r, h in zip(references, hypotheses, strict=True)]
    pairs = [(r, h) for r, h in pairs if r]
    if not pairs:
        raise ValueError("no non-empty references to score")
    # jiwer rejects empty hypotheses; a placeholder that matches nothing counts as deletions+1 sub.
    out = jiwer.process_words([r for r, _ in pairs], [h or "<empty>" for _, h in pairs])
    ref_words = out.hits + out.substitutions + out.deletions
    return WerResult(
        wer=(out.substitutions + out.deletions + out.insertions) / ref_words,
        substitutions=out.substitutions,
        deletions=out.deletions,
        insertions=out.insertions,
        reference_words=ref_words,
    )


def wer_of(reference: str, hypothesis: str, language: str | None = None) -> WerResult | None:
    """WER of one transcript (CER for :data:`~trax.io.languages.CER_LANGUAGES`); None when the
    normalized reference is empty (WER undefined)."""
    if not normalize_text(reference, language):
        return None
    return corpus_wer([reference], [hypothesis], language)


def word_errors(reference: str, words: Sequence[str]) -> list[int]:
    """Measured errors located at each hypothesis word (for calibrating and checking review flags).

    Each word is normalized on its own (:func:`normalize_text`; a run of numbers across words is
    joined into one token, owned by its first word) and the word sequence aligned
    to the normalized reference with jiwer. A word's errors are its substituted and inserted tokens
    plus the reference words deleted just before it (deletions after the last word go to the last
    word). Summed, they are the WER numerator of the per-word-normalized hypothesis, which can
    differ slightly from :func:`corpus_wer`'s (the normalizer sees whole sentences there).
    Deletions with no hypothesis word at all are not located (an empty list is returned).
    """
    owners: list[int] = []
    tokens: list[str] = []
    for index, word in enumerate(words):
        for token in normalize_text(word).split():
            if tokens and _is_number(token) and _is_number(tokens[-1]):
                tokens[-1] += token  # a run of numbers across words, joined as normalize_text joins it
            else:
                owners.append(index)
                tokens.append(token)
    result = [0] * len(words)
    ref = normalize_text(reference)
    if not ref or not tokens:
        return result if not tokens and not ref else [0] * len(words)
    out = jiwer.process_words(ref, " ".join(tokens))
    for chunk in out.alignments[0]:
        if chunk.type in ("substitute", "insert"):
            for position in range(chunk.hyp_start_idx, chunk.hyp_end_idx):
                result[owners[position]] += 1
        elif chunk.type == "delete":
            position = min(chunk.hyp_start_idx, len(tokens) - 1)
            result[owners[position]] += chunk.ref_end_idx - chunk.ref_start_idx
    return result


@dataclass(frozen=True)
class DerResult:
    """Diarization error, in seconds of the scored reference, with pyannote.metrics' components.

    Attributes:
        collar: Total collar width in seconds around each reference boundary that is not scored
            (pyannote's convention: ``0.5`` forgives ±0.25 s).
        skip_overlap: Whether overlapped reference speech was excluded (False: overlap is scored).
    """

    der: float
    false_alarm: float
    missed_detection: float
    confusion: float
    total: float
    collar: float
    skip_overlap: bool


def _recording(path: str, loader, sample_id: str) -> object:
    """The sample's recording in an RTTM/UEM file that may hold several.

    Its uri is matched to the sample id directly or after the same file-name folding sample ids get
    (``trñ00`` -> ``trn00``); a file holding one recording needs no match. ``None`` when a file holds
    no line for it (nobody speaks).
    """
    from trax.errors import TraxError
    from trax.io.samples import sample_id_from_name

    by_uri = loader(path)
    for uri, value in by_uri.items():
        if uri == sample_id or sample_id_from_name(Path(uri)) == sample_id:
            return value
    if len(by_uri) == 1:
        return next(iter(by_uri.values()))
    if by_uri:
        raise TraxError(path, f"no recording '{sample_id}' among {', '.join(sorted(by_uri))}")
    return None


def diarization_error(sample_id: str, reference_rttm: str, hypothesis_rttm: str, uem: str | None = None,
                      collar: float = 0.0, skip_overlap: bool = False) -> DerResult:
    """DER of a hypothesis RTTM against a reference RTTM with pyannote.metrics.

    Without a UEM, the scored region is the extent of the reference and the hypothesis
    (pyannote's default). An empty hypothesis scores every reference second as missed.
    """
    from pyannote.core import Annotation
    from pyannote.database.util import load_rttm, load_uem
    from pyannote.metrics.diarization import DiarizationErrorRate

    reference = _recording(reference_rttm, load_rttm, sample_id) or Annotation()
    hypothesis = _recording(hypothesis_rttm, load_rttm, sample_id) or Annotation()
    hypothesis.uri = reference.uri
    scored = _recording(uem, load_uem, sample_id) if uem else None
    metric = DiarizationErrorRate(collar=collar, skip_overlap=skip_overlap)
    with warnings.catch_warnings():  # pyannote warns that it derives the UEM when none is given
        warnings.simplefilter("ignore")
        components = metric(reference, hypothesis, uem=scored, detailed=True)
    total = components["total"]
    errors = components["false alarm"] + components["missed detection"] + components["confusion"]
    return DerResult(
        der=errors / total if total else 0.0,
        false_alarm=components["false alarm"],
        missed_detection=components["missed detection"],
        confusion=components["confusion"],
        total=total,
        collar=collar,
        skip_overlap=skip_overlap,
    )


def evaluate_file(
    sample_id: str,
    transcripts: dict[str, str],
    output_path: str,
    settings: dict,
    reference_text: str | None = None,
    reference_rttm: str | None = None,
    reference_uem: str | None = None,
    hypothesis_rttm: str | None = None,
    merged: str | None = None,
) -> dict:
    """Write ``evaluation.json``: WER of each transcript stage and DER of the diarization.

    Args:
        sample_id: The recording's id (also picks its lines in multi-recording RTTM/UEM files).
        transcripts: Stage name -> transcript JSON, in pipeline order; the last one is ``final``.
        output_path: Destination JSON.
        settings: The ``evaluate`` config section (``collar``, ``skip_overlap``).
        reference_text: Plain-text reference transcript.
        reference_rttm: Reference diarization; requires ``hypothesis_rttm``.
        reference_uem: Scoring regions for DER; the reference/hypothesis extent when absent.
        hypothesis_rttm: This run's ``diarization.rttm``.
        merged: This run's ``merged.json``: its quality estimates go into ``estimate``, next to
            the measured WER and DER.
    """
    from dataclasses import asdict

    from trax.io.jsonio import read_json, write_json_atomic
    from trax.io.provenance import provenance, sha256_file

    from trax.errors import TraxError

    for reference in (reference_text, reference_rttm, reference_uem):
        if reference and not Path(reference).is_file():
            raise TraxError(reference, "reference file not found (sample sheet)")
    inputs = {name: sha256_file(path) for name, path in transcripts.items()}
    wer = None
    language = None
    if reference_text:
        reference = Path(reference_text).read_text(encoding="utf-8")
        inputs["reference_text"] = sha256_file(reference_text)
        final = read_json(list(transcripts.values())[-1])
        language = final.get("language")
        scored = {name: wer_of(reference, read_json(path)["text"], language) for name, path in transcripts.items()}
        if all(result is not None for result in scored.values()):
            wer = {name: _rounded(asdict(result)) for name, result in scored.items()}
            wer["final"] = wer[list(transcripts)[-1]]
    der = None
    if reference_rttm:
        inputs.update(reference_rttm=sha256_file(reference_rttm), hypothesis_rttm=sha256_file(hypothesis_rttm))
        if reference_uem:
            inputs["reference_uem"] = sha256_file(reference_uem)
        der = _rounded(asdict(diarization_error(sample_id, reference_rttm, hypothesis_rttm, reference_uem,
                                                collar=settings["collar"], skip_overlap=settings["skip_overlap"])))
    estimate = None
    if merged:
        inputs["merged"] = sha256_file(merged)
        estimate = estimate_vs_measured(read_json(merged).get("quality") or {}, wer, der)
    result = {
        "sample_id": sample_id,
        "final_transcript": list(transcripts)[-1],
        "wer": wer,
        **({"wer_unit": error_unit(language)} if wer is not None and language not in (None, "en") else {}),
        "der": der,
        "estimate": estimate,
        "provenance": provenance(config=settings, input_sha256=inputs),
    }
    write_json_atomic(output_path, result, schema="evaluation")
    return result


def estimate_vs_measured(quality: dict, wer: dict | None, der: dict | None) -> dict:
    """merged.json's quality estimates next to the measurements (None where one side is missing)."""
    measured_wer = wer["final"]["wer"] if wer else None
    interval = quality.get("interval")
    estimated_der = quality.get("estimated_der")
    return {
        "wer": quality.get("estimated_wer"),
        "wer_interval": interval,
        "measured_wer": measured_wer,
        "wer_in_interval": (interval[0] <= measured_wer <= interval[1]) if interval and measured_wer is not None else None,
        "der": estimated_der,
        "measured_der": der["der"] if der else None,
        "diarization_confidence": quality.get("diarization_confidence"),
        "needs_review": quality.get("needs_review"),
    }


def _rounded(values: dict) -> dict:
    return {key: round(value, 4) if isinstance(value, float) else value for key, value in values.items()}
