"""Quality estimates (trax.quality): the shipped model, error location, flags.

The estimates on real audio (clean vs noisy jfk, schema, reruns) are checked on the report
workflow's run in tests/test_report.py; these are the pieces, without audio.
"""

import hashlib
import json
from pathlib import Path

import pytest

from trax.errors import TraxError
from trax.evaluation import word_errors
from trax.diarization.annotation import Turn
from trax.merge import MergeOptions, merge
from trax.quality import MODEL_PATH, QualityOptions, annotate_merged, expected_errors, load_model, transcript_words


def test_shipped_model_is_versioned_and_hashed() -> None:
    model = load_model()
    data = json.loads(MODEL_PATH.read_text(encoding="utf-8"))
    assert model.version == data["version"] and model.sha256 == hashlib.sha256(MODEL_PATH.read_bytes()).hexdigest()
    assert model.errors_per_flag >= 1 and model.interval_inflation >= 1 and model.diarization is not None
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
    assert body["speakers"][0]["diarization_confidence"] is None and body["quality"]["diarization_confidence"] is None

    # Looser thresholds: nothing flagged; a low diarization confidence is a reason of its own.
    diarization = {"confidence": {"score": 0.3, "estimated_der": 0.7, "speakers": {"A": 0.3}}}
    body = merge(transcript, [Turn(0.0, 60.0, "A")], MergeOptions())
    loose = QualityOptions(review_wer=1.0, review_utterance_errors=100.0, review_utterance_wer=1.0)
    annotate_merged(body, transcript, diarization, loose)
    assert body["quality"]["utterances_flagged"] == 0
    assert body["quality"]["reasons"] == ["diarization confidence 0.30 below 0.5"]
    assert body["speakers"][0]["diarization_confidence"] == 0.3


def test_candidate_word_features() -> None:
    """The candidate features bench/quality.py compares: one row per word, in WORD_FEATURES order."""
    import math

    from trax.quality import WORD_FEATURES

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
    # 10 % quantile of ln(0.9, 0.4, 0.95, 0.3), numpy's linear interpolation.
    assert rows[0]["segment_q10_log_prob"] == pytest.approx(math.log(0.3) + 0.3 * (math.log(0.4) - math.log(0.3)))
