"""Quality estimates: how right a transcript probably is, and which parts need a human.

Two small calibrated models, fitted by ``bench/quality.py`` on recordings with references and
shipped as data (``src/trax/data/quality_model.json``, its version and sha256 go into provenance).
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

**Diarization.** The embedded diarizer reports raw signals (:func:`diarization_signals`): how far
windows lie from their speaker's centroid, and how close they come to a second speaker; the
diarize stage adds the share of the recording diarized as speech. A ridge regression maps them to
an estimated DER; ``confidence = 1 - estimated DER``. Per speaker, the same model is applied to
that speaker's windows. On the 13 dev meeting excerpts only the speech share ranks DER at all
(missed speech is most of the embedded backend's error there), so the shipped model is mostly that:
a coarse figure, and ``bench/quality.py`` prints how coarse. The pyannote backend reports no
signals: its confidence is null, with the reason.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trax.errors import TraxError

#: The shipped model (package data).
MODEL_PATH = Path(__file__).resolve().parent / "data" / "quality_model.json"

#: Per-word candidate features (:func:`transcript_words`); a model uses those its JSON names.
WORD_FEATURES = ("log_prob", "context_log_prob", "segment_avg_logprob", "segment_no_speech_prob",
                 "segment_compression_ratio", "speech_rate", "word_length", "word_duration", "chars_per_second",
                 "segment_edge", "segment_low_share", "segment_q10_log_prob", "segment_words", "capitalized")
#: Per-recording (and per-speaker) candidate features of the diarization model (a model uses those
#: its JSON names). ``speech_share`` is the diarized speech over the recording's duration (the
#: recording's, also for each speaker: missed speech is the recording's); the others come from
#: :func:`diarization_signals`.
DIARIZATION_FEATURES = ("speech_share", "near_boundary_share", "outlier_share", "compactness", "low_similarity")

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
            estimated WER x its words) reach this. 1.5: "probably more than one word wrong".
            Flagging by WER alone catches far fewer errors, since errors of clean speech sit in
            long utterances of confident words.
        review_utterance_wer: An utterance is also flagged when its estimated WER is above this
            (0.3: a short utterance with probably a third of its words wrong, whatever its error
            count). With 1.5 errors, the clean dev set flags 22 % of its utterances, holding 62.5 %
            of the measured word errors (leave-one-out; ``bench/quality.py`` prints the sweep). The
            margin is one utterance each way: any cut from 1.25 to 1.95 errors gives the same
            flags, but a WER cut under 0.28 flags one more (error-free) utterance (26 % flagged)
            and one over 0.31 drops a flagged one (54 % of the errors); 0.5 flagged 18.5 %
            holding 54 %.
        review_diarization_confidence: A recording is flagged when its diarization confidence
            (1 - estimated DER) is below this. 0.5 (an estimated DER above 50 %): the embedded
            backend's DER on the dev meeting excerpts is about 40 %, so only recordings estimated
            clearly worse than that are flagged.
        max_listed_words: How many of an utterance's least certain words its reason names.
    """

    review_wer: float = 0.15
    review_utterance_errors: float = 1.5
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
class QualityModel:
    """The shipped calibration (see the module docstring).

    Attributes:
        version: The model's version string (changes with every refit).
        sha256: sha256 of the JSON file's bytes.
        asr: Logistic model of P(word is wrong).
        errors_per_flag: Measured errors per erroneous hypothesis word (≥ 1: deletions ride along).
        interval_z: Normal quantile of the WER interval (1.645: a 90 % interval).
        interval_inflation: Factor on the binomial standard deviation of a recording's error
            count, fitted so that the leave-one-out intervals cover their measured WER at the
            nominal rate (word errors cluster, so the binomial spread alone is too narrow).
        diarization: Linear model of a recording's DER, or None when none was fitted.
    """

    version: str
    sha256: str
    asr: LinearPart
    errors_per_flag: float
    interval_z: float
    interval_inflation: float
    diarization: LinearPart | None

    @classmethod
    def from_dict(cls, data: dict[str, Any], sha256: str = "") -> QualityModel:
        asr = data["asr"]
        diarization = data.get("diarization")
        return cls(version=data["version"], sha256=sha256, asr=LinearPart.from_dict(asr),
                   errors_per_flag=float(asr["errors_per_flag"]), interval_z=float(asr["interval_z"]),
                   interval_inflation=float(asr["interval_inflation"]),
                   diarization=LinearPart.from_dict(diarization) if diarization else None)

    def provenance(self) -> dict[str, str]:
        return {"version": self.version, "sha256": self.sha256}


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
    """
    return [pair for segment in transcript.get("segments", []) for pair in segment_words(segment)]


def segment_words(segment: Mapping[str, Any]) -> list[tuple[dict[str, Any], list[float]]]:
    """One segment's non-empty words with their feature rows (see :func:`transcript_words`)."""
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
        result.append((word, [logs[index], context, float(segment["avg_logprob"]),
                              float(segment["no_speech_prob"]), float(segment["compression_ratio"]), rate,
                              length, seconds, cps, edge, low_share, q10, math.log(len(words)), capital]))
    return result


def word_errors(segments: Iterable[Mapping[str, Any]], model: QualityModel) -> Iterator[tuple[dict[str, Any], float]]:
    """Every non-empty transcript word with its expected errors, computed one segment at a time."""
    for segment in segments:
        pairs = segment_words(segment)
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


def diarization_estimate(model: QualityModel, signals: dict[str, Any]) -> float | None:
    """Estimated DER (clipped to [0, 1]) from one set of signals; None without a model or windows."""
    if model.diarization is None or not signals.get("windows"):
        return None
    value = float(model.diarization.score([[float(signals[f]) for f in model.diarization.features]])[0])
    return round(min(max(value, 0.0), 1.0), DIGITS)


def diarization_confidence(signals: dict[str, Any] | None, renamed: dict[str, str], speech_share: float,
                           model: QualityModel | None = None) -> dict[str, Any]:
    """The ``confidence`` block of ``diarization.json``.

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


# --- merged.json ---------------------------------------------------------------------------------

def _percent(value: float) -> str:
    return f"{100 * value:.0f} %"


def annotate_merged(body: dict[str, Any], transcript: dict[str, Any], diarization: dict[str, Any] | None,
                    options: QualityOptions, model: QualityModel | None = None) -> None:
    """Add the quality fields to a ``merged.json`` body in place.

    Every utterance gets ``confidence`` (1 - its estimated WER) and ``needs_review`` with
    ``review_reason``; every speaker ``diarization_confidence``; the body a top-level ``quality``
    block. ``body``'s words must be ``transcript``'s non-empty words in order (what
    :func:`trax.merge.merge` builds).
    """
    model = model or load_model()
    errors = [error for _, error in word_errors(transcript.get("segments", []), model)]
    cursor = 0
    flagged = 0
    for utterance in body["utterances"]:
        count = len(utterance["words"])
        annotate_utterance(utterance, errors[cursor : cursor + count], options)
        cursor += count
        flagged += utterance["needs_review"]
    if cursor != len(errors):
        raise TraxError(body.get("sample_id", "merged.json"),
                        f"quality: {len(errors)} transcript words but {cursor} merged words")
    add_quality(body, errors, flagged, diarization, options, model)


def annotate_utterance(utterance: dict[str, Any], errors: Sequence[float], options: QualityOptions) -> None:
    """Add ``confidence``, ``estimated_wer``, ``needs_review`` and ``review_reason`` to one
    ``merged.json`` utterance from its words' expected errors (in word order)."""
    wer = sum(errors) / len(errors)
    utterance["confidence"] = round(min(max(1.0 - wer, 0.0), 1.0), DIGITS)
    utterance["estimated_wer"] = round(wer, DIGITS)
    utterance["needs_review"] = sum(errors) >= options.review_utterance_errors or wer > options.review_utterance_wer
    utterance["review_reason"] = _utterance_reason(utterance, sum(errors), options) if utterance["needs_review"] else None


def add_quality(body: dict[str, Any], errors: Sequence[float], flagged: int, diarization: dict[str, Any] | None,
                options: QualityOptions, model: QualityModel) -> None:
    """Add the recording's ``quality`` block and each speaker's ``diarization_confidence`` to a
    ``merged.json`` body (its utterances may be elsewhere: only speakers are read).

    Args:
        body: The body; its ``speakers`` are annotated.
        errors: Expected errors of every word of the recording, in order.
        flagged: How many utterances need review.
        diarization: ``diarization.json`` (its ``confidence`` block), or None.
        options: Review thresholds.
        model: The quality model.
    """
    estimate = estimate_wer(model, errors)
    confidence = (diarization or {}).get("confidence") or {}
    by_label = confidence.get("speakers") or {}
    for speaker in body["speakers"]:
        speaker["diarization_confidence"] = by_label.get(speaker["label"]) if speaker["label"] else None
    score = confidence.get("score")
    reasons = []
    if estimate.estimated_wer is not None and estimate.estimated_wer > options.review_wer:
        reasons.append(f"estimated WER {_percent(estimate.estimated_wer)} above {_percent(options.review_wer)}")
    if score is not None and score < options.review_diarization_confidence:
        reasons.append(f"diarization confidence {score:.2f} below {options.review_diarization_confidence:g}")
    body["quality"] = {
        "estimated_wer": estimate.estimated_wer,
        "interval": list(estimate.interval) if estimate.interval else None,
        "diarization_confidence": score,
        "estimated_der": confidence.get("estimated_der"),
        "needs_review": bool(reasons),
        "reasons": reasons,
        "utterances_flagged": flagged,
        "model": model.provenance(),
    }


def _utterance_reason(utterance: dict[str, Any], errors: float, options: QualityOptions) -> str:
    doubtful = sorted(utterance["words"], key=lambda w: (w["probability"], w["start"]))[: options.max_listed_words]
    listed = ", ".join(f"'{w['word']}' {w['probability']:.2f}" for w in doubtful)
    wer = errors / len(utterance["words"])
    return (f"{errors:.1f} errors expected in {len(utterance['words'])} words (estimated WER {_percent(wer)})"
            + (f"; least certain: {listed}" if listed else ""))
