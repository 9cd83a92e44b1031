"""Quality estimates (trax.quality.estimates): the shipped model, error location, flags.

The estimates on real audio (clean vs noisy jfk, schema, reruns) are checked on the report
workflow's run in tests/test_report.py; these are the pieces, without audio.
"""

import hashlib
import json
from pathlib import Path

import pytest

from trax.errors import TraxError
from trax.quality.evaluation import corpus_wer, word_errors
from trax.io.annotation import Turn
from trax.transcript.merge import MergeOptions, merge
from trax.quality.estimates import (
    MERGED_DIARIZATION_FEATURES,
    MODEL_PATH,
    NO_WORDS_REASON,
    NOT_DIARIZED_REASON,
    WORD_MARGIN_S,
    LinearPart,
    QualityOptions,
    annotate_merged,
    expected_errors,
    load_model,
    transcript_words,
    uncovered_word_share,
)
from trax.io.schemas import validate


def test_shipped_model_is_versioned_and_hashed() -> None:
    model = load_model()
    data = json.loads(MODEL_PATH.read_text(encoding="utf-8"))
    assert model.version == data["version"] and model.sha256 == hashlib.sha256(MODEL_PATH.read_bytes()).hexdigest()
    assert model.errors_per_flag >= 1 and model.interval_inflation >= 1 and model.diarization is not None
    # merged.json's part cross-checks with the transcript, at the margin it was fitted with;
    # diarization.json's part (written before any transcript exists) uses the diarizer's signals.
    assert model.diarization.features == MERGED_DIARIZATION_FEATURES
    assert data["diarization"]["margin_s"] == WORD_MARGIN_S
    assert model.diarization_without_transcript is not None
    assert "uncovered_word_share" not in model.diarization_without_transcript.features
    # Less diarized speech: a higher estimated DER; missed words never lower it (standardized
    # coefficients; the uncovered share is 0 on every dev excerpt, so its weight may be exactly 0).
    coef = dict(zip(model.diarization.features, model.diarization.coef))
    assert coef["uncovered_word_share"] >= 0 > coef["speech_share"]
    # Lower word probability, more expected errors (everything else equal).
    rows = [[p, p, -0.3, 0.01, 1.5, 3.0] for p in (-0.01, -0.7, -2.3, -4.6)]
    errors = expected_errors(model, rows)
    assert errors == sorted(errors) and errors[-1] > 5 * errors[0]


def test_bad_model_file_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "model.json"
    bad.write_text('{"version": "x"}')
    with pytest.raises(TraxError, match=r"model.json: cannot read quality model"):
        load_model(bad)
    with pytest.raises(TraxError, match="cannot read quality model"):
        load_model(tmp_path / "missing.json")


def test_word_errors_locate_substitutions_insertions_and_deletions() -> None:
    reference = "And so my fellow Americans, ask not what your country can do for you."
    words = ["And", "so", "my", "fellow", "Americans,", "ask", "not", "what", "you", "country", "do", "for", "you", "too."]
    # "you" for "your" (substitution), "can" missing before "do" (deletion), "too" inserted.
    assert word_errors(reference, words) == [0] * 8 + [1, 0, 1, 0, 0, 1]
    assert word_errors(reference, []) == []
    # A deletion at the end goes to the last word; numbers normalize per word.
    assert word_errors("we have twenty five apples", ["We", "have", "25"]) == [0, 0, 1]


def test_numbers_written_in_digits_score_like_spelled_ones() -> None:
    # Whisper's normalizer joins "five five" into "55" but leaves "5 5" apart (pocketsphinx's card
    # clip 004: a correct transcript scored 200 % WER); runs of digits are joined on both sides.
    assert corpus_wer(["five five"], ["5 5"]).wer == 0.0
    assert corpus_wer(["room four five six"], ["Room 4, 5, 6."]).wer == 0.0
    assert word_errors("five five", ["5", "5"]) == [0, 0]
    assert word_errors("five five", ["5", "6"]) == [1, 0]


def _transcript(probabilities: list[float]) -> dict:
    words = [{"word": f"w{i}", "start": i * 0.4, "end": i * 0.4 + 0.3, "probability": p} for i, p in enumerate(probabilities)]
    return {"sample_id": "t", "language": "en", "duration": 60.0,
            "segments": [{"start": 0.0, "end": 0.4 * len(words), "avg_logprob": -0.3, "no_speech_prob": 0.01,
                          "compression_ratio": 1.4, "words": words}]}


def test_flags_follow_the_configured_thresholds() -> None:
    # Two utterances (a pause over 1 s between them): sure words, then unsure ones.
    transcript = _transcript([0.99] * 10 + [0.2] * 6)
    for word in transcript["segments"][0]["words"][10:]:
        word["start"] += 5.0
        word["end"] += 5.0
    body = merge(transcript, [Turn(0.0, 60.0, "A")], MergeOptions())
    annotate_merged(body, transcript, None, QualityOptions())
    sure, unsure = body["utterances"]
    assert len(transcript_words(transcript)) == 16
    assert not sure["needs_review"] and sure["confidence"] > 0.9
    assert unsure["needs_review"] and "'w10' 0.20" in unsure["review_reason"]
    assert unsure["review_reason"].startswith(f"{unsure['estimated_wer'] * 6:.1f} errors expected in 6 words")
    assert body["quality"]["needs_review"] and body["quality"]["utterances_flagged"] == 1
    # Not diarized (no turns given): no diarization figure, and why.
    assert body["speakers"][0]["diarization_confidence"] is None and body["quality"]["diarization_confidence"] is None
    assert body["quality"]["diarization_reason"] == NOT_DIARIZED_REASON
    assert body["quality"]["uncovered_word_share"] is None and body["quality"]["speech_share"] is None

    # Looser thresholds: nothing flagged; a low diarization confidence is a reason of its own. A
    # model whose estimated DER is the uncovered word share; the one turn covers 6 of the 16 words
    # (0-2 s, widened to 2.3 s: words 0-5). Word 6 (2.4 s) is still assigned to A (nearest), the
    # other 9 are unknown.
    turns = [Turn(0.0, 2.0, "A")]
    body = merge(transcript, turns, MergeOptions())
    loose = QualityOptions(review_wer=1.0, review_utterance_errors=100.0, review_utterance_wer=1.0)
    annotate_merged(body, transcript, turns, loose, _uncovered_is_der())
    quality = body["quality"]
    assert quality["utterances_flagged"] == 0
    assert quality["uncovered_word_share"] == 0.625 and quality["estimated_der"] == 0.625
    assert quality["diarization_confidence"] == 0.375 and quality["diarization_reason"] is None
    assert quality["speech_share"] == round(2.0 / 60.0, 4)
    assert quality["reasons"] == ["diarization confidence 0.38 below 0.5"]
    speaker, unknown = body["speakers"]
    assert (speaker["words"], speaker["uncovered_word_share"], speaker["diarization_confidence"]) == (7, 0.1429, 0.8571)
    assert (unknown["id"], unknown["words"], unknown["uncovered_word_share"]) == ("unknown", 9, 1.0)
    assert unknown["diarization_confidence"] is None


def _uncovered_is_der():
    """The shipped model with a diarization part whose estimated DER is the uncovered word share."""
    import dataclasses

    part = LinearPart(MERGED_DIARIZATION_FEATURES, (0.0, 0.0), (1.0, 1.0), (1.0, 0.0), 0.0)
    return dataclasses.replace(load_model(), diarization=part)


def _provenance() -> dict:
    return {"trax_version": "x", "config": {}, "input_sha256": "0" * 64, "diarization_sha256": "0" * 64,
            "models": {}, "quality_model": load_model().provenance()}


def test_no_words_no_diarization_estimate_and_why() -> None:
    """Nothing to cross-check the diarization with: null figures with the reason, schema-valid."""
    transcript = _transcript([])
    turns = [Turn(1.0, 4.0, "A"), Turn(5.0, 9.0, "B")]
    body = merge(transcript, turns, MergeOptions())
    annotate_merged(body, transcript, turns, QualityOptions())
    validate({**body, "provenance": _provenance()}, "merged")
    quality = body["quality"]
    assert quality["diarization_confidence"] is None and quality["estimated_der"] is None
    assert quality["uncovered_word_share"] is None and quality["diarization_reason"] == NO_WORDS_REASON
    assert quality["speech_share"] == round(7.0 / 60.0, 4) and not quality["needs_review"]
    assert [(s["diarization_confidence"], s["uncovered_word_share"]) for s in body["speakers"]] == [(None, None)] * 2


def test_uncovered_word_share_counts_words_outside_widened_turns() -> None:
    turns = [Turn(1.0, 2.0, "A"), Turn(1.5, 3.0, "B"), Turn(6.0, 7.0, "A")]
    words = [
        {"start": 0.5, "end": 0.6, "speaker": "S1"},   # ends 0.1 s before the widened turn (0.7): uncovered
        {"start": 0.6, "end": 0.8, "speaker": "S1"},   # overhangs the widened edge: covered
        {"start": 2.5, "end": 2.9, "speaker": "S2"},   # inside the union of two overlapping turns
        {"start": 3.3, "end": 3.3, "speaker": "S2"},   # 0-s word on the widened edge: covered
        {"start": 4.0, "end": 5.0, "speaker": "S2"},   # in the gap (3.3-5.7): uncovered
        {"start": 7.4, "end": 7.9, "speaker": "S1"},   # after the last widened turn (7.3): uncovered
    ]
    coverage = uncovered_word_share(words, turns)
    assert coverage.spans == [(0.7, 3.3), (5.7, 7.3)]
    assert (coverage.words, coverage.uncovered, coverage.share()) == (6, 3, 0.5)
    assert coverage.speakers == {"S1": [3, 2], "S2": [3, 1]}
    assert (coverage.share("S1"), coverage.share("S2"), coverage.share("nobody")) == (0.6667, 0.3333, None)
    # A wider margin covers the word in the gap's edge region too; no turns cover nothing.
    assert uncovered_word_share(words, turns, margin_s=0.8).share() == round(1 / 6, 4)
    assert uncovered_word_share(words, []).share() == 1.0
    assert uncovered_word_share([], turns).share() is None


def test_candidate_word_features() -> None:
    """The candidate features bench/quality.py compares: one row per word, in WORD_FEATURES order."""
    import math

    from trax.quality.estimates import WORD_FEATURES

    transcript = _transcript([0.9, 0.4, 0.95, 0.3])
    words = transcript["segments"][0]["words"]
    words[1]["word"], words[2]["word"], words[3]["word"] = " Gutenberg", "1455.", "w3"
    words[2]["end"] = words[2]["start"]  # Whisper reports some words 0 s long
    rows = [dict(zip(WORD_FEATURES, row)) for _, row in transcript_words(transcript)]
    assert len(rows) == 4 and all(len(row) == len(WORD_FEATURES) for row in rows)
    assert [row["segment_edge"] for row in rows] == [1.0, 0.0, 0.0, 1.0]
    assert [row["capitalized"] for row in rows] == [0.0, 1.0, 0.0, 0.0]
    assert [row["word_length"] for row in rows] == [2.0, 9.0, 4.0, 2.0]
    assert rows[2]["word_duration"] == 0.0 and rows[2]["chars_per_second"] == 40.0
    assert rows[0]["chars_per_second"] == pytest.approx(2 / 0.3)
    assert all(row["segment_low_share"] == 0.5 and row["segment_words"] == pytest.approx(math.log(4)) for row in rows)
    assert all(row["second_opinion_disagrees"] == row["second_opinion_rival_confidence"] == 0 for row in rows)
    # A refined transcript's disputed word (combine mode): disputed, and the losing reading's confidence.
    refined = _refined([0.9, 0.6, 0.95, 0.3], [1])
    for chosen, rival in (("fast", 0.4), ("second", 0.6)):
        refined["refinement"]["changes"][0]["chosen"] = chosen
        agreement = [dict(zip(WORD_FEATURES, row)) for _, row in transcript_words(refined)]
        assert [(r["second_opinion_disagrees"], r["second_opinion_rival_confidence"]) for r in agreement] == [
            (0.0, 0.0), (1.0, rival), (0.0, 0.0), (0.0, 0.0)]
    # 10 % quantile of ln(0.9, 0.4, 0.95, 0.3), numpy's linear interpolation.
    assert rows[0]["segment_q10_log_prob"] == pytest.approx(math.log(0.3) + 0.3 * (math.log(0.4) - math.log(0.3)))


def _refined(probabilities: list[float], disputed: list[int], decoded: bool = True) -> dict:
    """A combine-mode refined transcript whose ``disputed`` words the two decoders disagreed on
    (the fast word kept each time, the rival reading at confidence 0.4)."""
    transcript = _transcript(probabilities)
    words = transcript["segments"][0]["words"]
    changes = []
    for index in disputed:
        word = words[index]
        word["change"] = len(changes)
        side = {"text": word["word"], "start": word["start"], "end": word["end"], "probability": word["probability"],
                "confidence": word["probability"]}
        changes.append({"start": word["start"], "end": word["end"], "segment": 0, "fast": side,
                        "second": {**side, "text": "other", "probability": 0.4, "confidence": 0.4},
                        "chosen": "fast", "reason": "test"})
    transcript["refinement"] = {"enabled": True, "status": "combined", "spans": [], "redecoded_s": 6.4,
                                "redecoded_share": 0.1, "mode": "combine", "changes": changes,
                                "chunks": [{"start": 0.0, "end": 6.4, "doubtful": 0, "decoded": decoded}]}
    return transcript


def _annotated(transcript: dict) -> dict:
    body = merge(transcript, [Turn(0.0, 60.0, "A")], MergeOptions())
    annotate_merged(body, transcript, None, QualityOptions())
    return body["quality"]


def test_refined_transcripts_get_the_agreement_model_and_disputed_words_count_more() -> None:
    from trax.quality.estimates import AGREEMENT_FEATURES, agreement_reason, asr_model_for
    from trax.quality.estimates import word_errors as expected

    model = load_model()
    assert model.asr_agreement is not None and not set(model.asr.features) & set(AGREEMENT_FEATURES)
    agreement = model.with_agreement()
    assert agreement.asr_part == "asr_agreement" and agreement.version == model.version
    assert "second_opinion_disagrees" in agreement.asr.features
    coef = dict(zip(agreement.asr.features, agreement.asr.coef))
    assert coef["second_opinion_disagrees"] > 0  # a disputed word is more likely wrong
    # Fast-only transcripts (and spans mode, non-English: no changes) keep the word-probability part.
    fast = _transcript([0.9] * 16)
    assert agreement_reason(fast) and asr_model_for(model, fast) is model
    assert _annotated(fast)["model"] == {**model.provenance(), "asr_part": "asr"}
    # Every chunk decoded a second time: the agreement part, even with nothing disputed.
    calm, disputed = _refined([0.9] * 16, []), _refined([0.9] * 16, [3, 4, 9])
    assert agreement_reason(calm) is None and asr_model_for(model, calm).asr_part == "asr_agreement"
    assert _annotated(calm)["model"] == {**model.provenance(), "asr_part": "asr_agreement"}
    errors = [e for _, e in expected(disputed["segments"], agreement, disputed["refinement"]["changes"])]
    assert errors[3] == errors[4] == errors[9] > 2 * errors[0] and errors[0] == errors[15]
    assert _annotated(disputed)["estimated_wer"] > _annotated(calm)["estimated_wer"]
    # A chunk left undecoded (refine.chunks: doubtful): its words were never compared.
    partial = _refined([0.9] * 16, [3], decoded=False)
    assert "not every speech chunk" in agreement_reason(partial) and asr_model_for(model, partial) is model
