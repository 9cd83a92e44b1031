"""Quality estimates: how right a transcript probably is, and which parts need a human.

Two small calibrated models, fitted by ``bench/quality.py`` on recordings with references and
shipped as data (``src/trax/quality/data/quality_model.json``, its version and sha256 go into provenance).
Nothing is fitted at run time; applying a model is a few numpy operations.

**Word errors (ASR).** Every transcript word gets a probability of being wrong from an
L2-regularised logistic regression over per-word features: :data:`WORD_FEATURES` are the
candidates (the word's own probability, the lowest probability around it, its segment's mean
log-probability, no-speech probability, compression ratio and speech rate, the word's length,
duration and characters per second, whether it opens or closes its segment, the share of doubtful
words and the 10 % quantile of word log-probability in its segment, the segment's length, and
whether the word is capitalized mid-segment); the shipped model uses the first three
(``bench/quality.py --compare`` prints every candidate's leave-one-out figures: none of the others
ranks clean recordings better). The probability times
``errors_per_flag`` (measured errors per erroneous hypothesis word: substitutions and insertions
plus the deletions next to them) is the word's expected number of errors. Summed over an utterance
or a recording and divided by its word count, that is the estimated WER; an utterance's
``confidence`` is ``1 - estimated WER`` (clipped to [0, 1]). A word-level model both locates errors
(the utterances to review) and adds up to recording figures, and it has far more training
examples (words) than a recording-level model would (recordings).

**The decoders' agreement.** When combine-mode refinement ran (the fast pass and a second model
decoded every speech chunk and were combined word by word: :func:`trax.asr.refine.combine_into`),
each word the two decoders disputed carries ``change`` in ``transcript.refined.json``, whichever
side won. Disagreement is the strongest single signal of word errors measured, so such a
transcript gets a second word model, the JSON's ``asr_agreement`` part: the three features above
plus ``second_opinion_disagrees`` (:data:`AGREEMENT_FEATURES`), fitted on the refined transcripts
of the same recordings. Leave-one-out on them, against the same three features without it: clean
dev Spearman 0.421 vs 0.206, all 78 recordings 0.704 vs 0.660; the 10 % of words with the most
expected errors hold 58.8 vs 35.3 % of the clean errors; pooled clean estimate 4.25 vs 4.11 %
(measured 3.74 %). The losing reading's confidence (``second_opinion_rival_confidence``) added
nothing, so it is not used. :func:`asr_model_for` chooses: ``asr_agreement`` when the refined transcript
records the combination and every speech chunk was decoded twice, else ``asr`` (fast-only
transcripts, spans mode, non-English recordings: refine leaves those as the fast pass wrote them).
``merged.json`` names the part applied (``quality.model.asr_part``); ``bench/quality.py`` prints
both parts' leave-one-out figures side by side.

**Diarization.** Two ridge regressions map a few per-recording figures to an estimated DER;
``confidence = 1 - estimated DER``.

* ``diarization`` (``merged.json``): the transcript cross-checks the diarization. The share of
  transcript words that fall outside every diarized speech turn (:func:`uncovered_word_share`,
  each turn widened by :data:`WORD_MARGIN_S`) is speech the diarizer missed; with the share of
  the recording diarized as speech (:data:`MERGED_DIARIZATION_FEATURES`). Computed in the merge
  step, the first that sees both; per speaker from that speaker's own words (with the recording's
  speech share). Without transcript words there is nothing to cross-check: the estimate is null,
  with the reason. It needs no backend signals, so it applies to any backend. On the dev meeting
  excerpts (embedded backend) the uncovered share is 0 on every recording: the transcriber and
  the diarizer both find speech with Silero VAD, so words lie inside diarized turns, and the fit
  gives it weight 0. The shipped part is therefore the speech share fitted on the recordings
  that have words (leave-one-out Spearman 0.527 on 11 of 13, against 0.264 for the diarizer-only
  part on all 13); the uncovered share stays in ``merged.json`` as a per-speaker diagnostic and
  gets weight when a set where it varies refits the model.
* ``diarization_without_transcript`` (``diarization.json``, written before any transcript
  exists): the embedded diarizer's raw signals (:func:`diarization_signals`: how far windows lie
  from their speaker's centroid, how close they come to a second speaker) and the speech share.
  Per speaker, the same model is applied to that speaker's windows. It ranks the dev recordings
  poorly (``bench/quality.py`` prints how poorly); the pyannote backend reports no signals, so
  there it is null, with the reason.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import hashlib
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trax.io.annotation import Turn
from trax.errors import TraxError

#: The shipped model (package data).
MODEL_PATH = Path(__file__).resolve().parent / "data" / "quality_model.json"

#: Per-word candidate features (:func:`transcript_words`); a model uses those its JSON names.
WORD_FEATURES = ("log_prob", "context_log_prob", "segment_avg_logprob", "segment_no_speech_prob",
                 "segment_compression_ratio", "speech_rate", "word_length", "word_duration", "chars_per_second",
                 "segment_edge", "segment_low_share", "segment_q10_log_prob", "segment_words", "capitalized",
                 "second_opinion_disagrees", "second_opinion_rival_confidence")
#: The features only a combine-mode refined transcript has (0 in any other): the two decoders'
#: agreement (:func:`segment_words`). A model naming one of them is used only where they exist
#: (:func:`asr_model_for`).
AGREEMENT_FEATURES = ("second_opinion_disagrees", "second_opinion_rival_confidence")
#: Per-recording (and per-speaker) candidate features of the diarization model (a model uses those
#: its JSON names). ``speech_share`` is the diarized speech over the recording's duration (the
#: recording's, also for each speaker: missed speech is the recording's); the others come from
#: :func:`diarization_signals`.
DIARIZATION_FEATURES = ("speech_share", "near_boundary_share", "outlier_share", "compactness", "low_similarity")
#: Per-recording (and per-speaker) features of the merged diarization model, in the order its JSON
#: may name them: :func:`uncovered_word_share` and ``speech_share`` (as above).
MERGED_DIARIZATION_FEATURES = ("uncovered_word_share", "speech_share")
#: Each diarized turn is widened by this much (seconds) on both sides before a word counts as
#: outside it: Whisper's word times and the diarizer's turn edges are each off by a few tenths of
#: a second, and a word that merely overhangs a turn's edge is not missed speech. 0.3 s; 0.2, 0.5
#: and 0.8 s rank the dev recordings about as well (``bench/quality.py`` prints the table).
WORD_MARGIN_S = 0.3
#: Why a merged diarization estimate is null.
NO_WORDS_REASON = "no words to cross-check the diarization"
NOT_DIARIZED_REASON = "not diarized (diarize.enabled is false)"
NO_MODEL_REASON = "the quality model has no diarization part"

#: Word probabilities are floored here before the log: Whisper reports 0.0 for some words, and
#: below 1e-3 the difference carries no information.
PROB_FLOOR = 1e-3
#: Speech rate is clipped here (words per second): a 0.1 s segment with two words is not 20 w/s.
MAX_SPEECH_RATE = 8.0
#: Segments shorter than this count as this long for the speech rate.
MIN_SEGMENT_S = 0.5
#: A window whose best-other-speaker similarity comes within this much (cosine similarity) of its
#: own speaker's is "near a decision boundary": a coin flip between two speakers.
BOUNDARY_MARGIN = 0.1
#: ``low_similarity`` is this quantile of the windows' similarity to their own centroid: a second
#: voice merged into a speaker shows as a low tail before it moves the mean.
LOW_QUANTILE = 0.1
DIGITS = 4
#: A word below this probability counts as doubtful for ``segment_low_share``.
LOW_PROB = 0.5
#: ``word_length`` (letters and digits) is clipped here.
MAX_WORD_LENGTH = 15
#: ``word_duration`` (seconds) is clipped here: a word stretched over a pause is not 5 s long.
MAX_WORD_S = 2.0
#: Words shorter than this count as this long for ``chars_per_second`` (Whisper gives some 0 s).
MIN_WORD_S = 0.05
#: ``chars_per_second`` is clipped here.
MAX_CHARS_PER_S = 40.0


@dataclass(frozen=True)
class QualityOptions:
    """The ``quality`` config section: when a recording or an utterance needs review.

    Attributes:
        review_wer: A recording is flagged when its estimated WER is above this (0.15: on the dev
            set tiny.en is around 8 %; twice that is a transcript a reader will stumble over).
        review_utterance_errors: An utterance is flagged when the errors expected in it (its
            estimated WER x its words) reach this. 1.75: "probably two words wrong". Flagging by
            WER alone catches far fewer errors, since errors of clean speech sit in long
            utterances of confident words.
        review_utterance_wer: An utterance is also flagged when its estimated WER is above this
            (0.3: a short utterance with probably a third of its words wrong, whatever its error
            count). With 1.75 errors the clean dev set flags 18.5 % of its 27 utterances, holding
            35.0 % of the measured word errors (leave-one-out; ``bench/quality.py`` prints the
            sweep); 1.5 flags 25.9 % holding 40.0 %, 1 flags 37.0 % holding 60.0 %. No cut
            reaches 60 % of the errors within 25 % of the utterances on today's decoder (the 6
            utterances with the most expected errors hold 50.0 %).
        review_diarization_confidence: A recording is flagged when its diarization confidence
            (1 - estimated DER) is below this. 0.5 (an estimated DER above 50 %): the embedded
            backend's DER on the dev meeting excerpts is about 40 %, so only recordings estimated
            clearly worse than that are flagged.
        max_listed_words: How many of an utterance's least certain words its reason names.
    """

    review_wer: float = 0.15
    review_utterance_errors: float = 1.75
    review_utterance_wer: float = 0.3
    review_diarization_confidence: float = 0.5
    max_listed_words: int = 3

    @classmethod
    def from_config(cls, settings: dict[str, Any] | None) -> QualityOptions:
        """Build options from the config section (unknown keys were rejected by the schema)."""
        return cls(**(settings or {}))


@dataclass(frozen=True)
class LinearPart:
    """One standardised linear model: ``intercept + ((x - mean) / scale) @ coef``."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float

    def score(self, rows: Any) -> Any:
        """Linear scores of feature rows (n x features)."""
        import numpy as np

        matrix = np.asarray(rows, dtype=np.float64).reshape(-1, len(self.features))
        return self.intercept + ((matrix - np.array(self.mean)) / np.array(self.scale)) @ np.array(self.coef)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LinearPart:
        return cls(tuple(data["features"]), tuple(data["mean"]), tuple(data["scale"]), tuple(data["coef"]),
                   float(data["intercept"]))


@dataclass(frozen=True)
class AsrPart:
    """One fitted word-error model (a JSON ``asr`` or ``asr_agreement`` section).

    Attributes:
        linear: Logistic model of P(word is wrong) over the features it names.
        errors_per_flag: Measured errors per erroneous hypothesis word (≥ 1: deletions ride along).
        interval_z: Normal quantile of the WER interval (1.645: a 90 % interval).
        interval_inflation: Factor on the binomial standard deviation of a recording's error
            count, fitted so that the leave-one-out intervals cover their measured WER at the
            nominal rate (word errors cluster, so the binomial spread alone is too narrow).
        languages: Languages it was fitted on (English when absent).
    """

    linear: LinearPart
    errors_per_flag: float
    interval_z: float
    interval_inflation: float
    languages: tuple[str, ...] = ("en",)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AsrPart:
        return cls(LinearPart.from_dict(data), float(data["errors_per_flag"]), float(data["interval_z"]),
                   float(data["interval_inflation"]), tuple(data.get("languages", ("en",))))


@dataclass(frozen=True)
class QualityModel:
    """The shipped calibration (see the module docstring).

    The ASR fields (``asr`` to ``interval_inflation``, ``languages``) are those of the word model
    in use, named by ``asr_part``: the JSON's ``asr`` part as loaded; :meth:`with_agreement` gives
    the same model with its ``asr_agreement`` part in use (:func:`asr_model_for` chooses).

    Attributes:
        version: The model's version string (changes with every refit).
        sha256: sha256 of the JSON file's bytes.
        asr: Logistic model of P(word is wrong).
        errors_per_flag: Measured errors per erroneous hypothesis word (≥ 1: deletions ride along).
        interval_z: Normal quantile of the WER interval (1.645: a 90 % interval).
        interval_inflation: Factor on the binomial standard deviation of a recording's error
            count, fitted so that the leave-one-out intervals cover their measured WER at the
            nominal rate (word errors cluster, so the binomial spread alone is too narrow).
        diarization: Linear model of a recording's DER from the transcript's cross-check
            (:data:`MERGED_DIARIZATION_FEATURES`; ``merged.json``), or None when none was fitted.
        diarization_without_transcript: Linear model of a recording's DER from the diarizer's
            own signals (:data:`DIARIZATION_FEATURES`; ``diarization.json``), or None.
        languages: Languages the ASR part was fitted on (``asr.languages``; English when absent:
            every reference of the fit is English, decoded by tiny.en). For any other language
            word probabilities come from another model on other speech, so no WER is estimated.
    """

    version: str
    sha256: str
    asr: LinearPart
    errors_per_flag: float
    interval_z: float
    interval_inflation: float
    diarization: LinearPart | None
    diarization_without_transcript: LinearPart | None = None
    languages: tuple[str, ...] = ("en",)
    asr_part: str = "asr"
    asr_agreement: AsrPart | None = None

    def calibrated_for(self, language: str | None) -> bool:
        """Whether WER estimates mean anything for a transcript in ``language`` (None: English)."""
        return (language or "en") in self.languages

    def with_agreement(self) -> QualityModel:
        """This model with its ``asr_agreement`` part as the word model (itself when it has none)."""
        part = self.asr_agreement
        if part is None:
            return self
        return dataclasses.replace(self, asr=part.linear, errors_per_flag=part.errors_per_flag,
                                   interval_z=part.interval_z, interval_inflation=part.interval_inflation,
                                   languages=part.languages, asr_part="asr_agreement")

    @classmethod
    def from_dict(cls, data: dict[str, Any], sha256: str = "") -> QualityModel:
        asr = AsrPart.from_dict(data["asr"])
        parts = {name: LinearPart.from_dict(data[name]) if data.get(name) else None
                 for name in ("diarization", "diarization_without_transcript")}
        if parts["diarization"] is not None and not set(parts["diarization"].features) <= set(MERGED_DIARIZATION_FEATURES):
            # A version-1 model: its only diarization part uses the diarizer's signals.
            parts = {"diarization": None, "diarization_without_transcript": parts["diarization"]}
        return cls(version=data["version"], sha256=sha256, asr=asr.linear, errors_per_flag=asr.errors_per_flag,
                   interval_z=asr.interval_z, interval_inflation=asr.interval_inflation, languages=asr.languages,
                   asr_agreement=AsrPart.from_dict(data["asr_agreement"]) if data.get("asr_agreement") else None,
                   **parts)

    def provenance(self) -> dict[str, str]:
        """The model's identity (``diarization.json``: no word model is applied there)."""
        return {"version": self.version, "sha256": self.sha256}

    def asr_provenance(self) -> dict[str, str]:
        """The model's identity and the word model applied (``merged.json``)."""
        return {**self.provenance(), "asr_part": self.asr_part}


@functools.cache
def _load(path: str, digest: str) -> QualityModel:
    return QualityModel.from_dict(json.loads(Path(path).read_text(encoding="utf-8")), sha256=digest)


def load_model(path: str | Path = MODEL_PATH) -> QualityModel:
    """Read a quality model JSON (cached per file content).

    Raises:
        TraxError: when the file is missing or not a quality model.
    """
    try:
        data = Path(path).read_bytes()
        return _load(str(path), hashlib.sha256(data).hexdigest())
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise TraxError(path, f"cannot read quality model: {exc}") from exc


# --- ASR: per-word features and estimates --------------------------------------------------------

def _log_prob(probability: float) -> float:
    return math.log(max(float(probability), PROB_FLOOR))


def transcript_words(transcript: dict[str, Any]) -> list[tuple[dict[str, Any], list[float]]]:
    """Every non-empty transcript word (the words merge keeps, in order) with its feature row.

    Features (:data:`WORD_FEATURES`):
        log_prob: ln of the word's probability (floored at :data:`PROB_FLOOR`).
        context_log_prob: the lowest of that and its neighbours' in the segment (errors come in
            runs: a confident word next to a doubtful one is often part of the same mistake).
        segment_avg_logprob / segment_no_speech_prob / segment_compression_ratio: the segment's
            decoder statistics as the transcript records them.
        speech_rate: the segment's words per second (clipped to :data:`MAX_SPEECH_RATE`); very
            fast or very slow speech is harder.
        word_length / word_duration / chars_per_second: the word's letters and digits, its
            seconds, and their ratio (clipped: :data:`MAX_WORD_LENGTH`, :data:`MAX_WORD_S`,
            :data:`MIN_WORD_S`, :data:`MAX_CHARS_PER_S`).
        segment_edge: 1 for the first and last word of a segment, else 0.
        segment_low_share: share of the segment's words below :data:`LOW_PROB`.
        segment_q10_log_prob: the 10 % quantile of the segment's word log-probabilities.
        segment_words: ln of the segment's word count.
        capitalized: 1 for a capitalized word that does not open its segment (names, or a sentence
            starting inside the segment), else 0.
        second_opinion_disagrees: 1 for a word the two decoders of combine-mode refinement
            disputed (it carries ``change``: :func:`trax.asr.refine.combine_into`), whichever side
            won, else 0.
        second_opinion_rival_confidence: for such a word, the calibrated confidence of the reading
            that lost (``refinement.changes``); 0 where the decoders agree.
    """
    changes = refinement_changes(transcript)
    return [pair for segment in transcript.get("segments", []) for pair in segment_words(segment, changes)]


def refinement_changes(transcript: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The transcript's ``refinement.changes`` (combine mode), which words' ``change`` point
    into; None when combine mode did not run."""
    return (transcript.get("refinement") or {}).get("changes")


def segment_words(segment: Mapping[str, Any],
                  changes: Sequence[Mapping[str, Any]] | None = None) -> list[tuple[dict[str, Any], list[float]]]:
    """One segment's non-empty words with their feature rows (see :func:`transcript_words`).

    Args:
        segment: A transcript segment.
        changes: The transcript's ``refinement.changes`` (combine mode), which words' ``change``
            indices point into; None without them (the agreement features are then 0).
    """
    import numpy as np

    result = []
    words = [w for w in segment.get("words", []) if w.get("word", "").strip()]
    logs = [_log_prob(w["probability"]) for w in words]
    duration = max(float(segment["end"]) - float(segment["start"]), MIN_SEGMENT_S)
    rate = min(len(words) / duration, MAX_SPEECH_RATE)
    low_share = sum(w["probability"] < LOW_PROB for w in words) / max(len(words), 1)
    q10 = float(np.quantile(logs, 0.1)) if logs else 0.0
    for index, word in enumerate(words):
        context = min(logs[max(0, index - 1) : index + 2])
        text = word["word"].strip()
        letters = sum(c.isalnum() for c in text)
        length = float(min(letters, MAX_WORD_LENGTH))
        seconds = min(max(float(word["end"]) - float(word["start"]), 0.0), MAX_WORD_S)
        cps = min(letters / max(seconds, MIN_WORD_S), MAX_CHARS_PER_S)
        edge = float(index == 0 or index == len(words) - 1)
        capital = float(index > 0 and text[:1].isupper())
        disputed, rival = _agreement(word, changes)
        result.append((word, [logs[index], context, float(segment["avg_logprob"]),
                              float(segment["no_speech_prob"]), float(segment["compression_ratio"]), rate,
                              length, seconds, cps, edge, low_share, q10, math.log(len(words)), capital,
                              disputed, rival]))
    return result


def _agreement(word: Mapping[str, Any], changes: Sequence[Mapping[str, Any]] | None) -> tuple[float, float]:
    """``second_opinion_disagrees`` and ``second_opinion_rival_confidence`` of one word."""
    if changes is None or "change" not in word:
        return 0.0, 0.0
    change = changes[word["change"]]
    return 1.0, float(change["fast" if change["chosen"] == "second" else "second"]["confidence"])


def agreement_reason(transcript: Mapping[str, Any]) -> str | None:
    """Why a transcript (its head is enough) has no decoder agreement to estimate with, or None
    when it has: combine-mode refinement ran and decoded every speech chunk a second time (with
    ``refine.chunks: doubtful`` the undecoded chunks' words would count as agreed on, unheard)."""
    refinement = transcript.get("refinement") or {}
    if "changes" not in refinement:
        return "no second decode (refine combine mode did not run)"
    if not all(chunk["decoded"] for chunk in refinement.get("chunks", [])):
        return "not every speech chunk was decoded a second time"
    return None


def asr_model_for(model: QualityModel, transcript: Mapping[str, Any]) -> QualityModel:
    """The word model to apply to ``transcript`` (its head is enough): the agreement part when the
    transcript has the decoders' agreement (:func:`agreement_reason`) and ``model`` has that part,
    else ``model`` as it is (fast-only transcripts, spans mode, non-English: refine skips those)."""
    if model.asr_agreement is not None and agreement_reason(transcript) is None:
        return model.with_agreement()
    return model


def word_errors(segments: Iterable[Mapping[str, Any]], model: QualityModel,
                changes: Sequence[Mapping[str, Any]] | None = None) -> Iterator[tuple[dict[str, Any], float]]:
    """Every non-empty transcript word with its expected errors, computed one segment at a time
    (``changes``: the transcript's ``refinement.changes``, for the agreement features)."""
    for segment in segments:
        pairs = segment_words(segment, changes)
        yield from zip((word for word, _ in pairs), expected_errors(model, [row for _, row in pairs]), strict=True)


def expected_errors(model: QualityModel, rows: Sequence[Sequence[float]]) -> list[float]:
    """Expected number of errors carried by each word (probability of error x errors_per_flag).

    Args:
        model: The quality model; its ASR part names the columns it uses.
        rows: One row of :data:`WORD_FEATURES` per word (:func:`transcript_words`).
    """
    import numpy as np

    if not rows:
        return []
    columns = [WORD_FEATURES.index(name) for name in model.asr.features]
    probabilities = 1.0 / (1.0 + np.exp(-model.asr.score(np.asarray(rows, dtype=np.float64)[:, columns])))
    return [float(value) for value in probabilities * model.errors_per_flag]


@dataclass(frozen=True)
class WerEstimate:
    """A recording's estimated WER and its interval (``interval_z`` quantiles)."""

    estimated_wer: float | None
    interval: tuple[float, float] | None


def estimate_wer(model: QualityModel, errors: Sequence[float]) -> WerEstimate:
    """Estimated WER of a set of words from their expected errors, with an interval.

    The interval treats each word as a Bernoulli error of probability ``e / errors_per_flag``
    weighted by ``errors_per_flag``, inflated by ``interval_inflation``; None without words.
    """
    if not errors:
        return WerEstimate(None, None)
    count = len(errors)
    k = model.errors_per_flag
    wer = sum(errors) / count
    variance = sum(k * e * (1.0 - min(e / k, 1.0)) for e in errors)
    half = model.interval_z * model.interval_inflation * math.sqrt(variance) / count
    return WerEstimate(round(wer, DIGITS), (round(max(0.0, wer - half), DIGITS), round(wer + half, DIGITS)))


# --- diarization ---------------------------------------------------------------------------------

#: The signals of no windows at all (no speech): no estimate can be made from them.
NO_WINDOWS: dict[str, Any] = {"windows": 0, "outlier_share": 0.0, "near_boundary_share": 0.0, "compactness": 1.0,
                              "low_similarity": 1.0, "margin": None}


def no_speech_signals() -> dict[str, Any]:
    """:func:`diarization_signals`' result for a recording without speech."""
    return {"recording": dict(NO_WINDOWS), "speakers": {}}


def diarization_signals(similarity: Any, labels: Any, cluster_threshold: float) -> dict[str, Any]:
    """Raw confidence signals of a clustering, for the recording and per cluster.

    Args:
        similarity: windows x clusters cosine similarity of each window to each cluster centroid.
        labels: Cluster of each window (0..k-1).
        cluster_threshold: The clustering's cosine-distance cut.

    Returns:
        ``{"recording": signals, "speakers": {"S<k>": signals}}`` where signals are
        ``outlier_share`` (windows farther than ``cluster_threshold`` from their own centroid:
        they did not really belong to it), ``near_boundary_share`` (windows whose best other
        centroid is within :data:`BOUNDARY_MARGIN` of their own; 0 with one speaker),
        ``compactness`` (mean similarity to the own centroid), ``low_similarity`` (its
        :data:`LOW_QUANTILE` quantile), ``margin`` (mean own minus best
        other similarity; None with one speaker) and ``windows``.
    """
    import numpy as np

    similarity = np.asarray(similarity, dtype=np.float64)
    labels = np.asarray(labels)
    rows = np.arange(len(labels))
    own = similarity[rows, labels]
    if similarity.shape[1] > 1:
        others = similarity.copy()
        others[rows, labels] = -np.inf
        margin = own - others.max(axis=1)
    else:
        margin = None

    def summary(mask: Any) -> dict[str, Any]:
        count = int(mask.sum())
        if count == 0:
            return NO_WINDOWS
        return {
            "windows": count,
            "outlier_share": round(float(np.mean(own[mask] < 1.0 - cluster_threshold)), DIGITS),
            "near_boundary_share": round(float(np.mean(margin[mask] < BOUNDARY_MARGIN)), DIGITS)
            if margin is not None else 0.0,
            "compactness": round(float(np.mean(own[mask])), DIGITS),
            "low_similarity": round(float(np.quantile(own[mask], LOW_QUANTILE)), DIGITS),
            "margin": round(float(np.mean(margin[mask])), DIGITS) if margin is not None else None,
        }

    everything = np.ones(len(labels), dtype=bool)
    return {"recording": dict(summary(everything)),
            "speakers": {f"S{k}": dict(summary(labels == k)) for k in range(similarity.shape[1])}}


def der_estimate(part: LinearPart, values: Mapping[str, float]) -> float:
    """Estimated DER (clipped to [0, 1]) of one diarization part from the features it names."""
    value = float(part.score([[float(values[f]) for f in part.features]])[0])
    return round(min(max(value, 0.0), 1.0), DIGITS)


def diarization_estimate(model: QualityModel, signals: dict[str, Any]) -> float | None:
    """Estimated DER from one set of diarizer signals (the ``diarization_without_transcript``
    part); None without that part or without windows."""
    if model.diarization_without_transcript is None or not signals.get("windows"):
        return None
    return der_estimate(model.diarization_without_transcript, signals)


def diarization_confidence(signals: dict[str, Any] | None, renamed: dict[str, str], speech_share: float,
                           model: QualityModel | None = None) -> dict[str, Any]:
    """The ``confidence`` block of ``diarization.json`` (the ``diarization_without_transcript``
    part: no transcript exists yet when the diarize stage writes it).

    Args:
        signals: What the backend reported (:func:`diarization_signals`), or None when the backend
            reports none (pyannote): then every figure is None and ``reason`` says why.
        renamed: Backend label -> label in the RTTM (``S1`` -> ``SPEAKER_00``).
        speech_share: Diarized speech seconds / recording seconds.
        model: The quality model (the shipped one when None).
    """
    model = model or load_model()
    if signals:
        share = round(float(speech_share), DIGITS)
        signals = {"recording": {**signals["recording"], "speech_share": share},
                   "speakers": {label: {**values, "speech_share": share} for label, values in signals["speakers"].items()}}
    if not signals:
        return {"score": None, "estimated_der": None, "speakers": {}, "signals": None,
                "reason": "the backend reports no confidence signals", "model": model.provenance()}
    estimated = diarization_estimate(model, signals["recording"])
    speakers = {}
    for label, values in signals["speakers"].items():
        if label in renamed:
            der = diarization_estimate(model, values)
            speakers[renamed[label]] = None if der is None else round(1.0 - der, DIGITS)
    return {
        "score": None if estimated is None else round(1.0 - estimated, DIGITS),
        "estimated_der": estimated,
        "speakers": dict(sorted(speakers.items())),
        "signals": {"recording": signals["recording"],
                    "speakers": {renamed[k]: v for k, v in sorted(signals["speakers"].items()) if k in renamed}},
        "reason": None if estimated is not None else "no speech windows",
        "model": model.provenance(),
    }


# --- diarization cross-checked by the transcript ------------------------------------------------

@dataclass
class WordCoverage:
    """Transcript words inside and outside the diarized speech, for the recording and per speaker.

    Build it with :meth:`of_turns`, then :meth:`add` (or :meth:`add_words`) every word, in any
    order; or call :func:`uncovered_word_share`. A word is *uncovered* when its time (``start`` to ``end``; a
    0-s word: its instant) shares nothing with any diarized turn widened by ``margin_s`` on both
    sides: the transcript heard speech where the diarizer found none. Words are counted, not
    timed: Whisper reports some words 0 s long, and a missed short word is as much missed
    speech as a long one for this purpose.

    Attributes:
        spans: The union of the widened turns, sorted and disjoint.
        margin_s: How much each turn was widened (seconds).
        words: Words added.
        uncovered: Of those, how many lie outside every span.
        speakers: Speaker -> ``[words, uncovered]`` of the words assigned to it.
    """

    spans: list[tuple[float, float]]
    margin_s: float = WORD_MARGIN_S
    words: int = 0
    uncovered: int = 0
    speakers: dict[str, list[int]] = field(default_factory=dict)

    @classmethod
    def of_turns(cls, turns: Iterable[Turn], margin_s: float = WORD_MARGIN_S) -> WordCoverage:
        """An empty count against ``turns`` widened by ``margin_s`` seconds on both sides."""
        spans: list[tuple[float, float]] = []
        for start, end in sorted((t.start - margin_s, t.end + margin_s) for t in turns):
            if spans and start <= spans[-1][1]:
                spans[-1] = (spans[-1][0], max(spans[-1][1], end))
            else:
                spans.append((start, end))
        return cls(spans=spans, margin_s=margin_s)

    def covers(self, start: float, end: float) -> bool:
        """Whether ``start``..``end`` shares time with a span (touching counts for 0-s words)."""
        index = bisect.bisect_right(self.spans, (start, math.inf)) - 1  # last span starting at or before start
        if index >= 0 and self.spans[index][1] >= start:
            return True
        return index + 1 < len(self.spans) and self.spans[index + 1][0] <= end

    def add(self, start: float, end: float, speaker: str | None = None) -> None:
        """Count one word (``speaker``: who it was assigned to, or None)."""
        missed = not self.covers(float(start), float(end))
        self.words += 1
        self.uncovered += missed
        if speaker is not None:
            counts = self.speakers.setdefault(speaker, [0, 0])
            counts[0] += 1
            counts[1] += missed

    def add_words(self, words: Iterable[Mapping[str, Any]]) -> None:
        """Count words with ``start``, ``end`` and optionally ``speaker`` (``merged.json`` words)."""
        for word in words:
            self.add(word["start"], word["end"], word.get("speaker"))

    def share(self, speaker: str | None = None) -> float | None:
        """Share of the recording's (or ``speaker``'s) words that are uncovered; None without words."""
        words, uncovered = self.speakers.get(speaker, [0, 0]) if speaker is not None else (self.words, self.uncovered)
        return round(uncovered / words, DIGITS) if words else None


def uncovered_word_share(words: Iterable[Mapping[str, Any]], turns: Iterable[Turn],
                         margin_s: float = WORD_MARGIN_S) -> WordCoverage:
    """How many of ``words`` fall outside every turn of ``turns`` (see :class:`WordCoverage`).

    Args:
        words: Words with ``start`` and ``end`` (seconds) and optionally ``speaker`` (a
            ``merged.json`` word: then they are also counted per speaker).
        turns: The diarization.
        margin_s: Each turn is widened by this much on both sides (:data:`WORD_MARGIN_S`).

    Returns:
        The counts; ``.share()`` is the recording's uncovered word share.
    """
    coverage = WordCoverage.of_turns(turns, margin_s)
    coverage.add_words(words)
    return coverage


def speech_share(turns: Iterable[Turn], duration: float) -> float:
    """Diarized speech (the union of the turns) over the recording's duration, at most 1; 0 when
    the recording has no duration."""
    if duration <= 0:
        return 0.0
    spans = WordCoverage.of_turns(turns, margin_s=0.0).spans
    return round(min(sum(end - start for start, end in spans) / duration, 1.0), DIGITS)


@dataclass(frozen=True)
class MergedDiarization:
    """The diarization estimate of ``merged.json`` (the ``diarization`` part of the model).

    Attributes:
        score: 1 - estimated DER, or None (``reason`` says why).
        estimated_der: The recording's estimated DER, or None.
        uncovered_word_share: :func:`uncovered_word_share` of the recording, or None.
        speech_share: Diarized speech over the recording's duration, or None when not diarized.
        reason: Why the estimate is null, else None.
        speakers: Speaker -> ``(score, uncovered_word_share)``; both None for a speaker without
            words.
    """

    score: float | None
    estimated_der: float | None
    uncovered_word_share: float | None
    speech_share: float | None
    reason: str | None
    speakers: dict[str, tuple[float | None, float | None]]


def merged_diarization(coverage: WordCoverage | None, share: float | None,
                       model: QualityModel) -> MergedDiarization:
    """Estimate the diarization's DER from the transcript's cross-check.

    Args:
        coverage: The transcript's words counted against the diarized turns (per speaker: the
            words merge assigned to it), or None when the recording was not diarized.
        share: Diarized speech over the recording's duration (:func:`speech_share`); the
            recording's also for each speaker (missed speech is the recording's).
        model: The quality model (its ``diarization`` part).
    """
    if coverage is None or share is None:
        return MergedDiarization(None, None, None, None, NOT_DIARIZED_REASON, {})
    uncovered = coverage.share()
    part = model.diarization
    reason = NO_WORDS_REASON if uncovered is None else NO_MODEL_REASON if part is None else None

    def estimate(value: float | None) -> float | None:
        if value is None or part is None:
            return None
        return der_estimate(part, {"uncovered_word_share": value, "speech_share": share})

    speakers = {}
    for speaker in coverage.speakers:
        der = estimate(coverage.share(speaker))
        speakers[speaker] = (None if der is None else round(1.0 - der, DIGITS), coverage.share(speaker))
    der = estimate(uncovered)
    return MergedDiarization(score=None if der is None else round(1.0 - der, DIGITS), estimated_der=der,
                             uncovered_word_share=uncovered, speech_share=round(share, DIGITS), reason=reason,
                             speakers=speakers)


# --- merged.json ---------------------------------------------------------------------------------

def _percent(value: float) -> str:
    return f"{100 * value:.0f} %"


def annotate_merged(body: dict[str, Any], transcript: dict[str, Any], turns: Sequence[Turn] | None,
                    options: QualityOptions, model: QualityModel | None = None) -> None:
    """Add the quality fields to a ``merged.json`` body in place.

    Every utterance gets ``confidence`` (1 - its estimated WER) and ``needs_review`` with
    ``review_reason``; every speaker ``diarization_confidence`` and ``uncovered_word_share``; the
    body a top-level ``quality`` block. ``body``'s words must be ``transcript``'s non-empty words
    in order (what :func:`trax.transcript.merge.merge` builds from ``turns``; None: not diarized).
    """
    model = asr_model_for(model or load_model(), transcript)
    words = word_errors(transcript.get("segments", []), model, refinement_changes(transcript))
    errors = [error for _, error in words]
    coverage = WordCoverage.of_turns(turns) if turns is not None else None
    calibrated = model.calibrated_for(body.get("language"))
    cursor = 0
    flagged = 0
    for utterance in body["utterances"]:
        count = len(utterance["words"])
        annotate_utterance(utterance, errors[cursor : cursor + count], options, calibrated)
        cursor += count
        flagged += utterance["needs_review"]
        if coverage is not None:
            coverage.add_words(utterance["words"])
    if cursor != len(errors):
        raise TraxError(body.get("sample_id", "merged.json"),
                        f"quality: {len(errors)} transcript words but {cursor} merged words")
    share = speech_share(turns, float(body.get("duration") or 0.0)) if turns is not None else None
    add_quality(body, errors, flagged, merged_diarization(coverage, share, model), options, model,
                transcript.get("language_detection"))


def annotate_utterance(utterance: dict[str, Any], errors: Sequence[float], options: QualityOptions,
                       calibrated: bool = True) -> None:
    """Add ``confidence``, ``estimated_wer``, ``needs_review`` and ``review_reason`` to one
    ``merged.json`` utterance from its words' expected errors (in word order); all null/false when
    the model is not ``calibrated`` for the transcript's language."""
    if not calibrated:
        utterance.update(confidence=None, estimated_wer=None, needs_review=False, review_reason=None)
        return
    wer = sum(errors) / len(errors)
    utterance["confidence"] = round(min(max(1.0 - wer, 0.0), 1.0), DIGITS)
    utterance["estimated_wer"] = round(wer, DIGITS)
    utterance["needs_review"] = sum(errors) >= options.review_utterance_errors or wer > options.review_utterance_wer
    utterance["review_reason"] = _utterance_reason(utterance, sum(errors), options) if utterance["needs_review"] else None


def add_quality(body: dict[str, Any], errors: Sequence[float], flagged: int, diarization: MergedDiarization,
                options: QualityOptions, model: QualityModel,
                language_detection: Mapping[str, Any] | None = None) -> None:
    """Add the recording's ``quality`` block and each speaker's ``diarization_confidence`` and
    ``uncovered_word_share`` to a ``merged.json`` body (its utterances may be elsewhere: only
    speakers are read).

    Args:
        body: The body; its ``speakers`` are annotated.
        errors: Expected errors of every word of the recording, in order.
        flagged: How many utterances need review.
        diarization: The transcript's cross-check of the diarization (:func:`merged_diarization`).
        options: Review thresholds.
        model: The quality model.
        language_detection: The transcript's ``language_detection``: an uncertain language flags
            the recording for review.

    The body's ``language`` decides whether a WER is estimated (:meth:`QualityModel.calibrated_for`);
    when not, ``estimated_wer`` is null and ``wer_reason`` says why.
    """
    language = body.get("language") or "en"
    calibrated = model.calibrated_for(language)
    estimate = estimate_wer(model, errors) if calibrated else WerEstimate(None, None)
    wer_reason = None
    if not calibrated:
        wer_reason = (f"the quality model is calibrated on {', '.join(model.languages)} only: "
                      f"no WER estimate for language '{language}'")
    elif not errors:
        wer_reason = "no words"
    for speaker in body["speakers"]:
        score, uncovered = diarization.speakers.get(speaker["id"], (None, None))
        speaker["diarization_confidence"] = score if speaker["label"] else None
        speaker["uncovered_word_share"] = uncovered
    score = diarization.score
    reasons = []
    if estimate.estimated_wer is not None and estimate.estimated_wer > options.review_wer:
        reasons.append(f"estimated WER {_percent(estimate.estimated_wer)} above {_percent(options.review_wer)}")
    if score is not None and score < options.review_diarization_confidence:
        reasons.append(f"diarization confidence {score:.2f} below {options.review_diarization_confidence:g}")
    if language_detection and language_detection.get("uncertain"):
        reasons.append(f"language uncertain: {language_detection['reason']}")
    body["quality"] = {
        "estimated_wer": estimate.estimated_wer,
        "wer_reason": wer_reason,
        "interval": list(estimate.interval) if estimate.interval else None,
        "diarization_confidence": score,
        "estimated_der": diarization.estimated_der,
        "uncovered_word_share": diarization.uncovered_word_share,
        "speech_share": diarization.speech_share,
        "diarization_reason": diarization.reason,
        "needs_review": bool(reasons),
        "reasons": reasons,
        "utterances_flagged": flagged,
        "model": model.asr_provenance(),
    }


def _utterance_reason(utterance: dict[str, Any], errors: float, options: QualityOptions) -> str:
    doubtful = sorted(utterance["words"], key=lambda w: (w["probability"], w["start"]))[: options.max_listed_words]
    listed = ", ".join(f"'{w['word']}' {w['probability']:.2f}" for w in doubtful)
    wer = errors / len(utterance["words"])
    return (f"{errors:.1f} errors expected in {len(utterance['words'])} words (estimated WER {_percent(wer)})"
            + (f"; least certain: {listed}" if listed else ""))
